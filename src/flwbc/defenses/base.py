"""The client-defense extension point.

A client defense acts in benign clients' local training: a step hook after every SGD step
(FL-WBC), and post-processing of the finished update (local DP). Defenses chain: a config's
`defense.client` names one or a list, applied in order. Each is one module that subclasses
`ClientDefense` and registers with `@register_client_defense("name")`; options come from
`defense.options.<name>`, validated against the class's `Options`. The built-ins are written
exactly so (`wbc.py`, `ldp.py`, `leadfl.py`).

The engines call these hooks and know nothing else of the defense. Attackers never defend.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Protocol

from torch import Tensor

from flwbc.client.local import StepHook
from flwbc.config import ExperimentConfig, defense_names
from flwbc.registry import ConfiguredPlugin, O, Registry

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext

CLIENT_DEFENSES: Registry[type[ClientDefense]] = Registry("client defense", "none or ")


class ClientRow(Protocol):
    """One client's local training in one round, as a defense sees it."""

    @property
    def exp(self) -> ExperimentContext: ...

    @property
    def round(self) -> int: ...

    @property
    def client(self) -> int: ...


class ClientDefense(ConfiguredPlugin[O], ABC):  # noqa: B024 (every hook has a default: a defense overrides some)
    """Base class of client defenses: one instance per experiment, built from its config."""

    def step_key(self) -> Hashable | None:
        """What of this defense shapes the local steps, equal for rows that may train in
        lock-step under one hook (None: it does not act on the steps)."""
        return None

    def step_hook(self, rows: Sequence[ClientRow], position: int) -> StepHook | None:
        """The hook applied after each SGD step to `rows` (G clients of one lock-step group,
        possibly of several runs: read each row's settings from `row.exp.defenses[position]`).
        A hook may offer `stats() -> list[dict[str, float]]`, per row, for the round record."""
        return None

    def extra_grad(
        self, exp: ExperimentContext, t: int, c: int, w: Tensor
    ) -> Callable[[Tensor], Tensor] | None:
        """A regulariser's gradient added to benign client c's gradient at every step, as a
        function of its current weights (None: nothing), e.g. LeadFL's."""
        return None

    def finish(self, exp: ExperimentContext, t: int, c: int, update: Tensor) -> Tensor:
        """Post-process benign client c's finished update (default: unchanged)."""
        return update


def register_client_defense(name: str) -> Callable[[type[ClientDefense]], type[ClientDefense]]:
    """Register a `ClientDefense` subclass under `name`."""
    return CLIENT_DEFENSES.register(name)


def build_client_defenses(cfg: ExperimentConfig) -> list[ClientDefense]:
    """The config's chain of client defenses, in order."""
    return [
        CLIENT_DEFENSES.lookup(name)(
            cfg, CLIENT_DEFENSES.options(name, cfg.defense.options.get(name, {}))
        )
        for name in defense_names(cfg.defense.client)
    ]

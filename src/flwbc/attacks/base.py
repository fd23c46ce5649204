"""The attack extension point.

An attack decides what an attacker does in an adversarial round: what it trains on and with
which loss (its plan of steps, and which attackers' plans have the same shape), and, as a
client transform (`flwbc.client.transform`) written for one attacker with explicit state, a
gradient term added at every step, what it does after every step and how its finished update
is post-processed; colluding attacks also craft the round's rows. Each attack is one module that
subclasses `Attack` and registers with `@register_attack("name")`; a config selects it with
`attack.name` and passes `attack.options`, validated against the class's `Options`.

The engines call these hooks and know nothing else of the attack.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from torch import Tensor

from flwbc.client.local import Epoch
from flwbc.client.transform import ClientTransform
from flwbc.registry import ConfiguredPlugin, O, Registry

if TYPE_CHECKING:
    from flwbc.config import ExperimentConfig
    from flwbc.context import ExperimentContext, RoundPlan

ATTACKS: Registry[type[Attack]] = Registry("attack")


class Attack(ConfiguredPlugin[O], ClientTransform, ABC):
    """Base class of attacks: one instance per experiment, built from its config; its client
    hooks are `ClientTransform`'s, run for each attacker of the experiment."""

    goal: ClassVar[Literal["none", "targeted", "untargeted"]] = "untargeted"
    """What the attack is after: `none` (a baseline: attackers train honestly), `targeted`
    (specific inputs misclassified: a backdoor or eq. 3's D_M) or `untargeted` (accuracy);
    benches place its cells by it."""

    metrics: ClassVar[tuple[str, ...]] = ()
    """Registered metrics that every run of this attack records, after the config's (e.g. a
    backdoor's success rate); runs of other attacks do not record them."""

    @abstractmethod
    def plan(
        self, exp: ExperimentContext, t: int, c: int, generator: torch.Generator
    ) -> tuple[int, Iterator[Epoch]]:
        """Attacker c's steps in round t, and its number of own training samples; batches are
        drawn from `generator` (the stream (seed, "data", t, c))."""

    @abstractmethod
    def group_key(self, exp: ExperimentContext, n: int) -> Hashable:
        """Equal for attackers (of any run) whose plans have the same shape and loss terms."""

    def craft(
        self, exp: ExperimentContext, t: int, updates: Tensor, malicious: list[bool]
    ) -> Tensor:
        """Colluding attacks: the round's updates [K, P] as the server receives them, given all
        of them (rows in the round's client order, `malicious` marking the attackers' rows, whose
        values are what `final` returned). Default: unchanged. An attack that assumes only
        partial knowledge must use only the rows it may see."""
        return updates

    def craft_against(
        self,
        exp: ExperimentContext,
        t: int,
        updates: Tensor,
        malicious: list[bool],
        server: Callable[[Tensor], Tensor],
    ) -> Tensor:
        """`craft` for attacks that also know the deployed server: `server(candidate)` is the
        aggregate the server's pre-aggregation steps and rule would compute from a candidate
        [K, P] of the round's updates (on copies of their state: asking changes nothing).
        Default: `craft`, which does not ask."""
        return self.craft(exp, t, updates, malicious)

    def stand_in(self) -> bool:
        """Whether one attacker row stands for all of an adversarial round's attackers, with
        their summed aggregation weight (the FL-WBC reference code's emulated attack), instead
        of one row per attacker. Default: False."""
        return False

    def plan_round(
        self,
        exp: ExperimentContext,
        t: int,
        clients: list[int],
        malicious: list[bool],
        weights: Tensor,
        count: int,
    ) -> RoundPlan | None:
        """Replace adversarial round t's aggregation plan, given its `clients` in order,
        `malicious` marking the attackers among them, and their unnormalised float64 `weights`
        (a stand-in's already times `count`, the round's number of attackers). None (the
        default): the ordinary plan, the weights normalised."""
        return None

    def check(self, exp: ExperimentContext) -> None:
        """Raise `FlwbcError` (one line) for options that do not fit the prepared experiment
        (its dataset, its clients), before any round runs. Default: nothing to check."""

    def observe(self, exp: ExperimentContext, t: int, w: Tensor) -> None:
        """Called with the new global model w after every round t, before its checkpoint is
        written (t = 0: the initial model of a run that starts afresh). Default: nothing."""


def register_attack(name: str) -> Callable[[type[Attack]], type[Attack]]:
    """Register an `Attack` subclass under `name`."""
    return ATTACKS.register(name)


def build_attack(cfg: ExperimentConfig) -> Attack | None:
    """The config's attack (None when attacks are disabled)."""
    if not cfg.attack.enabled:
        return None
    name = cfg.attack.name
    return ATTACKS.lookup(name)(cfg, ATTACKS.options(name, cfg.attack.options))

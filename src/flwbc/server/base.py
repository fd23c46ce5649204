"""The aggregation extension point.

An aggregator maps the round's client updates (client model minus global model, a `[K, P]`
matrix) and their FedAvg weights to one update for the global model. Each rule is one small
module that subclasses `Aggregator`, overrides `aggregate`, and registers under a name with
`@register_aggregator`; configs and the CLI select it by that name with its options.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from flwbc.errors import FlwbcError

AGGREGATORS: dict[str, type[Aggregator]] = {}


@dataclass
class RoundContext:
    """What a rule may know about the round besides the updates."""

    round: int
    client_ids: list[int]
    generator: torch.Generator
    global_weights: Tensor
    reference_update: Callable[[], Tensor] | None = None
    """For rules with a server-side root dataset (FLTrust): the server's own update."""


@dataclass
class Aggregate:
    update: Tensor
    info: dict[str, Any] = field(default_factory=dict)


class Aggregator(ABC):
    """Base class of aggregation rules.

    `rank_based` rules (median, trimmed mean, Krum, ...) ignore the FedAvg weights, so the
    reference code's weight emulation of several attackers means nothing to them.
    """

    name: ClassVar[str] = ""
    rank_based: ClassVar[bool] = False

    def check(self, num_updates: int) -> None:
        """Raise `FlwbcError` (one line naming the rule and the bound) if the rule cannot work
        with `num_updates` updates per round. Called once before the first round."""
        if num_updates < 1:
            raise FlwbcError(
                f"aggregator '{self.name}' needs at least 1 update per round (n={num_updates})"
            )

    @abstractmethod
    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        """Combine `updates` [K, P] with normalised `weights` [K] into one update [P]."""

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors a stateful rule carries across rounds (saved with every checkpoint)."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore what `state_dict` returned (on resume)."""
        return None


def register_aggregator(name: str) -> Callable[[type[Aggregator]], type[Aggregator]]:
    def deco(cls: type[Aggregator]) -> type[Aggregator]:
        cls.name = name
        AGGREGATORS[name] = cls
        return cls

    return deco


def build_aggregator(name: str, options: dict[str, Any] | None = None) -> Aggregator:
    """Instantiate a registered rule; unknown names or options give one clear error line."""
    if name not in AGGREGATORS:
        raise FlwbcError(
            f"unknown aggregator '{name}'; choose one of {', '.join(sorted(AGGREGATORS))}"
        )
    cls = AGGREGATORS[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options or {}) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) if accepted else "no options"
        raise FlwbcError(
            f"aggregator '{name}' has no option {', '.join(unknown)} (it takes: {takes})"
        )
    try:
        return cls(**(options or {}))
    except (TypeError, ValueError) as err:
        raise FlwbcError(f"aggregator '{name}': {err}") from None

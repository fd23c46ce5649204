"""The aggregation extension point.

An aggregator maps the round's client updates (client model minus global model, a `[K, P]`
matrix) and their FedAvg weights to one update for the global model. Each rule is one small
module that subclasses `Aggregator`, overrides `aggregate`, and registers under a name with
`@register_aggregator`; configs and the CLI select it by that name with its options.

A rule declares what it needs besides the updates: `root_size` (a clean root set of that many
training images held by the server, whose update `RoundContext.reference_update` gives),
`rank_based` (it ignores the FedAvg weights), and state carried across rounds
(`state_dict`/`load_state_dict`, saved with every checkpoint); every rule sees the round's
client ids in `RoundContext`. Its options are its constructor's keyword arguments, typed by
their annotations (or by an `Options` pydantic model the class declares), validated when the
experiment is built.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel
from torch import Tensor

from flwbc.context import RoundContext
from flwbc.errors import FlwbcError
from flwbc.plugin_options import signature_model, validate_options
from flwbc.registry import Registry, Stateful

AGGREGATORS: Registry[type[Aggregator]] = Registry("aggregator")


@dataclass
class Aggregate:
    update: Tensor
    info: dict[str, Any] = field(default_factory=dict)
    flagged: list[int] | None = None
    """Rows of `updates` the rule excluded or down-weighted as suspicious (its docstring says
    which); None for rules that do not detect. When set, the round's record gets a `detection`
    entry counted against the real attackers (`flwbc.round.aggregate_round`)."""


class Aggregator(Stateful, ABC):
    """Base class of aggregation rules.

    `rank_based` rules (median, trimmed mean, Krum, ...) ignore the FedAvg weights, so the
    reference code's weight emulation of several attackers means nothing to them.
    """

    name: ClassVar[str] = ""
    rank_based: ClassVar[bool] = False
    root_size: int | None = None
    """Images of the server's clean root set this rule needs (None: none)."""
    per_client: ClassVar[bool] = False
    """The rule keeps a history per client id (FoolsGold, FLDetector), so no pre-aggregation
    step may merge or reorder rows in front of it."""
    Options: ClassVar[type[BaseModel] | None] = None
    """Typed options; default: a model built from the constructor's signature."""

    @property
    def krum_f(self) -> int | None:
        """The f of the Krum score this rule selects updates by (Krum, Multi-Krum), for attacks
        that simulate the deployed selection (Fang et al.'s attack on Krum); None for a rule
        that does not select by Krum's score alone."""
        return None

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


def register_aggregator(name: str) -> Callable[[type[Aggregator]], type[Aggregator]]:
    """Register an `Aggregator` subclass under `name`."""
    return AGGREGATORS.register(name)


def options_model(cls: type[Aggregator]) -> type[BaseModel]:
    """The rule's typed options: its `Options`, else its constructor's signature."""
    return cls.Options or signature_model(cls.name or cls.__name__, cls.__init__)


def build_aggregator(name: str, options: dict[str, Any] | None = None) -> Aggregator:
    """Instantiate a registered rule with its options validated against their types; unknown
    names, unknown options and bad values give one clear error line naming the rule and the
    option."""
    cls = AGGREGATORS.lookup(name)
    given = dict(options or {})
    checked = validate_options("aggregator", name, options_model(cls), given)
    values = {k: getattr(checked, k) for k in given} if checked is not None else given
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise FlwbcError(f"aggregator '{name}': {err}") from None

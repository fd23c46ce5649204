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

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, get_type_hints

import torch
from pydantic import BaseModel, ConfigDict, create_model
from torch import Tensor

from flwbc.errors import FlwbcError
from flwbc.plugin_options import validate_options
from flwbc.registry import Registry

AGGREGATORS: Registry[type[Aggregator]] = Registry("aggregator")


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
    root_size: int | None = None
    """Images of the server's clean root set this rule needs (None: none)."""
    Options: ClassVar[type[BaseModel] | None] = None
    """Typed options; default: a model built from the constructor's signature."""

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
    """Register an `Aggregator` subclass under `name`."""
    return AGGREGATORS.register(name)


def signature_model(
    name: str, fn: Callable[..., Any], skip: tuple[str, ...] = ()
) -> type[BaseModel]:
    """A pydantic model of a callable's keyword options, from their annotations and defaults
    (the generic fallback for plug-ins that declare no `Options`). Strict: a string is not a
    number here (the CLI and config files give typed values)."""
    fields: dict[str, Any] = {}
    hints = get_type_hints(fn.__init__ if isinstance(fn, type) else fn)
    for p in inspect.signature(fn).parameters.values():
        if p.name in ("self", *skip) or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = ... if p.default is p.empty else p.default
        fields[p.name] = (hints.get(p.name, Any), default)
    return create_model(
        f"{name}_options", __config__=ConfigDict(extra="forbid", strict=True), **fields
    )


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

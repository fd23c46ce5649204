"""The pre-aggregation extension point: steps that transform a round's client updates before
any aggregation rule sees them (clipping, bucketing, nearest-neighbour mixing, ...), chained in
the order a config's `server.pre` lists them.

Each step is one module that subclasses `PreAggregator` and registers with
`@register_pre_aggregator("name")`; a config names it with `{name, options}`, the options
validated against its `Options`. A step draws randomness only from the generator it is given,
the stream (seed, "pre", t, position).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

import torch
from pydantic import BaseModel
from torch import Tensor

from flwbc.context import RoundContext
from flwbc.registry import Registry, Stateful

PRE_AGGREGATORS: Registry[type[PreAggregator[Any]]] = Registry("pre-aggregation step")


O = TypeVar("O", bound=BaseModel | None)  # noqa: E741


class PreAggregator(Stateful, ABC, Generic[O]):
    """Base class of pre-aggregation steps; `Options` is the step's options model, and
    `self.options` an instance of it (typed by the subclass's `PreAggregator[Options]`)."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel] | None] = None
    keeps_rows: ClassVar[bool] = True
    """Whether output row i still stands for the round's client i (a step that merges or
    reorders rows, like bucketing, says False: the rule's flags then name no client). A step
    that mixes each row with others but keeps its place (nnm) says True: a flag on row i is then
    charged to client i, whose row it was."""

    def __init__(self, options: O) -> None:
        self.options = options

    @abstractmethod
    def apply(
        self, updates: Tensor, weights: Tensor, ctx: RoundContext, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, dict[str, Any]]:
        """Transform `updates` [K, P] and their weights [K]; return them (possibly fewer rows,
        e.g. bucket means) and what to record for the round (empty: nothing)."""


def register_pre_aggregator(
    name: str,
) -> Callable[[type[PreAggregator[Any]]], type[PreAggregator[Any]]]:
    """Register a `PreAggregator` subclass under `name`."""
    return PRE_AGGREGATORS.register(name)


def build_pre_aggregators(steps: list[Any]) -> list[PreAggregator[Any]]:
    """The chain a config's `server.pre` names (each with `.name` and `.options`)."""
    return [
        PRE_AGGREGATORS.lookup(step.name)(PRE_AGGREGATORS.options(step.name, step.options))
        for step in steps
    ]

"""The post-aggregation extension point: steps that transform the rule's aggregate before it
moves the global model (clipping it, adding noise), chained in the order a config's
`server.post` lists them, behind any rule. Central DP behind the median, for example, is
`server: {aggregator: median, pre: [{name: clip, ...}], post: [{name: noise, ...}]}`.

Each step is one module that subclasses `PostAggregator[Options]` and registers with
`@register_post_aggregator("name")`; a config names it with `{name, options}`, the options
validated against its `Options` when the experiment is built, and typed as that model in the
step (`self.options`). A step draws randomness only from the generator it is given: in a run,
the stream (seed, "post", t, position). Rules whose papers fix their own clipping and noise
(`cdp`, `crfl`, `flame`, `norm_bound`) apply the same steps and functions with the round's
server stream, so their numbers stay what they were.
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

O = TypeVar("O", bound=BaseModel)  # noqa: E741

POST_AGGREGATORS: Registry[type[PostAggregator[Any]]] = Registry("post-aggregation step")


class PostAggregator(Stateful, ABC, Generic[O]):
    """Base class of post-aggregation steps; `Options` is the step's options model."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]]

    def __init__(self, options: O) -> None:
        self.options = options

    @abstractmethod
    def apply(
        self, update: Tensor, ctx: RoundContext, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, Any]]:
        """Transform the aggregate `update` [P] (the global model moves from
        `ctx.global_weights` by it); return it and what to record for the round (empty:
        nothing)."""


def register_post_aggregator(
    name: str,
) -> Callable[[type[PostAggregator[Any]]], type[PostAggregator[Any]]]:
    """Register a `PostAggregator` subclass under `name`."""
    return POST_AGGREGATORS.register(name)


def build_post_aggregators(steps: list[Any]) -> list[PostAggregator[Any]]:
    """The chain a config's `server.post` names (each with `.name` and `.options`)."""
    return [
        POST_AGGREGATORS.lookup(step.name)(POST_AGGREGATORS.options(step.name, step.options))
        for step in steps
    ]

"""Static norm clipping before aggregation: every client update is scaled to L2 norm at most
`bound` (as in norm bounding, Sun et al., "Can you really backdoor federated learning?", 2019,
here as a step in front of any rule rather than a rule of its own). Assumes nothing about the
attackers; `bound` must suit the benign updates' norms."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from flwbc.context import RoundContext
from flwbc.plugin_options import PluginOptions
from flwbc.preagg.base import PreAggregator, register_pre_aggregator
from flwbc.transforms import clip_by_norm


class ClipOptions(PluginOptions):
    bound: float = Field(1.0, gt=0, description="largest L2 norm an update keeps")


@register_pre_aggregator("clip")
class Clip(PreAggregator[ClipOptions]):
    """Scale each update to L2 norm at most `bound`; record which clients (or, after a step
    that merged rows, which rows) were clipped."""

    Options = ClipOptions

    def apply(
        self, updates: Tensor, weights: Tensor, ctx: RoundContext, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, dict[str, Any]]:
        clipped, which = clip_by_norm(updates, self.options.bound)
        # after a step that merged rows (bucketing) they are no longer clients: record positions
        rows = ctx.client_ids if len(ctx.client_ids) == len(updates) else range(len(updates))
        ids = [c for c, w in zip(rows, which.tolist(), strict=True) if w]
        return clipped, weights, {"clipped": ids}

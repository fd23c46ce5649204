"""Clipping of the aggregate: the rule's update is scaled to L2 norm at most `bound`
(`flwbc.transforms.clip_by_norm`), bounding how far one round can move the global model
whatever the rule let through. Per-update clipping before the rule is the `clip`
pre-aggregation step."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from flwbc.context import RoundContext
from flwbc.plugin_options import PluginOptions
from flwbc.postagg.base import PostAggregator, register_post_aggregator
from flwbc.transforms import clip_by_norm


class AggregateClipOptions(PluginOptions):
    bound: float = Field(gt=0, allow_inf_nan=False, description="largest L2 norm of the update")


@register_post_aggregator("clip")
class AggregateClip(PostAggregator[AggregateClipOptions]):
    """Scale the aggregate to L2 norm at most `bound`; record its norm and whether it was
    clipped."""

    Options = AggregateClipOptions

    def apply(
        self, update: Tensor, ctx: RoundContext, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, Any]]:
        clipped, was = clip_by_norm(update, self.options.bound)
        return clipped, {"norm": float(update.norm()), "clipped": bool(was)}

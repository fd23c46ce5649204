"""Norm bounding (Sun, Kairouz, Suresh & McMahan 2019, "Can you really backdoor federated
learning?").

Every update is clipped to L2 norm at most `bound` (`flwbc.transforms.clip_by_norm`: rows with
a larger norm are scaled down to exactly `bound`, the others are left unchanged), then the
clipped updates are averaged with the FedAvg weights. `info["clipped"]` is how many updates
were scaled down.
"""

from __future__ import annotations

import math

from pydantic import Field
from torch import Tensor

from flwbc.plugin_options import StrictOptions
from flwbc.server.base import Aggregate, Aggregator, RoundContext, register_aggregator
from flwbc.transforms import clip_by_norm


class NormBoundOptions(StrictOptions):
    bound: float = Field(
        1.0, gt=0, description="every update is clipped to this L2 norm before the mean"
    )


@register_aggregator("norm_bound")
class NormBound(Aggregator):
    Options = NormBoundOptions

    def __init__(self, bound: float = 1.0) -> None:
        if (
            isinstance(bound, bool)
            or not isinstance(bound, int | float)
            or math.isnan(bound)
            or bound <= 0
        ):
            raise ValueError(f"bound must be a number > 0 (got {bound!r})")
        self.bound = float(bound)

    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        self.check(updates.shape[0])
        clipped, was_clipped = clip_by_norm(updates, self.bound)
        w = weights.to(device=updates.device, dtype=updates.dtype)
        return Aggregate(w @ clipped, {"clipped": int(was_clipped.sum())})

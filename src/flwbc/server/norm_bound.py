"""Norm bounding (Sun, Kairouz, Suresh & McMahan 2019, "Can you really backdoor federated
learning?").

Every update is clipped to L2 norm at most `bound` (`flwbc.transforms.clip_by_norm`: rows with
a larger norm are scaled down to exactly `bound`, the others are left unchanged), then the
clipped updates are averaged with the FedAvg weights. `info["clipped"]` is how many updates
were scaled down. The clipping is the `clip` pre-aggregation step's (`clip_by_norm`), so this
rule is that step in front of FedAvg.
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor

from flwbc.plugin_options import StrictOptions
from flwbc.server.base import Aggregate, Aggregator, RoundContext, register_aggregator
from flwbc.transforms import clip_by_norm


class NormBoundOptions(StrictOptions):
    bound: float = Field(
        1.0,
        gt=0,
        description="every update is clipped to this L2 norm before the mean",
    )


@register_aggregator("norm_bound")
class NormBound(Aggregator):
    Options = NormBoundOptions

    def __init__(self, **options: object) -> None:
        self.options = NormBoundOptions(**options)  # type: ignore[arg-type]

    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        self.check(updates.shape[0])
        clipped, was_clipped = clip_by_norm(updates, self.options.bound)
        w = weights.to(device=updates.device, dtype=updates.dtype)
        return Aggregate(w @ clipped, {"clipped": int(was_clipped.sum())})

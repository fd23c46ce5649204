"""FedAvg (McMahan et al. 2017; paper eq. 4): the weighted mean of the client updates."""

from __future__ import annotations

from torch import Tensor

from flwbc.server.base import Aggregate, Aggregator, RoundContext, register_aggregator


@register_aggregator("fedavg")
class FedAvg(Aggregator):
    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        return Aggregate(weights.to(updates.dtype) @ updates)

"""Coordinate-wise median, CMA (Yin et al. 2018, "Byzantine-robust distributed learning: towards
optimal statistical rates"; the paper's CMA baseline, §7.1).

Each coordinate of the aggregate is the median of that coordinate over the K updates. For even K
it is the mean of the two middle values, as `numpy.median` (not `torch.median`, which returns the
lower of the two). Rank-based: the FedAvg weights are ignored.
"""

from __future__ import annotations

from torch import Tensor

from flwbc.server.base import Aggregate, Aggregator, RoundContext, register_aggregator


def coordinate_median(updates: Tensor) -> Tensor:
    """Median of each column of `updates` [K, P]; the mean of the two middle values for even K."""
    k = updates.shape[0]
    ordered = updates.sort(dim=0).values
    if k % 2 == 1:
        return ordered[k // 2]
    return (ordered[k // 2 - 1] + ordered[k // 2]) / 2


@register_aggregator("median")
class CoordinateMedian(Aggregator):
    rank_based = True

    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        self.check(updates.shape[0])
        return Aggregate(coordinate_median(updates))

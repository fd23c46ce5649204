"""Coordinate-wise trimmed mean, CTMA (Yin et al. 2018, "Byzantine-robust distributed learning:
towards optimal statistical rates"; the paper's CTMA baseline with β ∈ {0.1, 0.2, 0.4}, §7.1).

With K updates and k = floor(beta * K) (computed in floating point, as `int(beta * K)`), each
coordinate of the aggregate is the plain mean of that coordinate's values after removing its k
largest and k smallest: the same as `scipy.stats.trim_mean(updates, beta, axis=0)`. Rank-based:
the FedAvg weights are ignored.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from torch import Tensor

from flwbc.errors import FlwbcError
from flwbc.plugin_options import StrictOptions
from flwbc.server.base import Aggregate, Aggregator, RoundContext, register_aggregator


class TrimmedMeanOptions(StrictOptions):
    beta: float = Field(
        0.1,
        ge=0,
        lt=0.5,
        description="β: share of the values removed at each end of every coordinate, "
        "⌊β·K⌋ of K (the paper: 0.1, 0.2, 0.4)",
    )


@register_aggregator("trimmed_mean")
class TrimmedMean(Aggregator):
    rank_based = True
    Options = TrimmedMeanOptions

    def __init__(self, **options: Any) -> None:
        o = TrimmedMeanOptions(**options)
        self.beta = float(o.beta)

    def trimmed(self, num_updates: int) -> int:
        """k: how many values are removed at each end of every coordinate."""
        return int(self.beta * num_updates)

    def check(self, num_updates: int) -> None:
        k = self.trimmed(num_updates)
        if num_updates - 2 * k < 1:
            raise FlwbcError(
                f"aggregator '{self.name}' needs n - 2k >= 1 updates left after trimming "
                f"k = floor(beta*n) per side (n={num_updates}, beta={self.beta}, k={k})"
            )

    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        n = updates.shape[0]
        self.check(n)
        k = self.trimmed(n)
        kept = updates.sort(dim=0).values[k : n - k] if k else updates
        return Aggregate(kept.mean(dim=0), {"trimmed": k})

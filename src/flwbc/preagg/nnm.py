"""Nearest-neighbour mixing, NNM (Allouah et al., "Fixing by mixing: a recipe for optimal
Byzantine ML under heterogeneity", AISTATS 2023, Algorithm 1).

Each of the n updates is replaced by the plain mean of its n - f nearest updates in L2
distance, itself included (at distance 0). Distances are `flwbc.server.krum.pairwise_sq_dists`
of the incoming rows; ties go to the lower row. The weights pass unchanged. Assumes at most f
of the n updates are Byzantine and n > f; it is meant to precede a robust rule (Krum, median,
trimmed mean, ...), which it makes robust under heterogeneous benign updates.

Deviation: none in the computation; the paper uses f of the rule that follows, here it is the
step's own option.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from flwbc.context import RoundContext
from flwbc.errors import FlwbcError
from flwbc.plugin_options import PluginOptions
from flwbc.preagg.base import PreAggregator, register_pre_aggregator
from flwbc.server.krum import pairwise_sq_dists


class NNMOptions(PluginOptions):
    f: int = Field(
        1,
        ge=0,
        description="Byzantine updates tolerated: each update becomes the "
        "mean of its n - f nearest (itself included)",
    )


def nearest_neighbour_mix(updates: Tensor, f: int) -> Tensor:
    """Each row of `updates` [n, P] replaced by the mean of its n - f nearest rows (itself
    included; ties: lower rows first)."""
    n = updates.shape[0]
    dists = pairwise_sq_dists(updates).fill_diagonal_(0.0)
    nearest = torch.sort(dists, dim=1, stable=True).indices[:, : n - f]
    return torch.stack([updates[rows].mean(dim=0) for rows in nearest])


@register_pre_aggregator("nnm")
class NearestNeighbourMixing(PreAggregator[NNMOptions]):
    """Replace each update by the mean of its n - f nearest neighbours."""

    Options = NNMOptions

    def apply(
        self, updates: Tensor, weights: Tensor, ctx: RoundContext, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, dict[str, Any]]:
        n, f = updates.shape[0], self.options.f
        if n <= f:
            raise FlwbcError(
                f"pre-aggregation step 'nnm' needs more than f updates per round (n={n}, f={f})"
            )
        return nearest_neighbour_mix(updates, f), weights, {}

"""SignGuard (Xu, Huang, Wang & Hu, "SignGuard: Byzantine-robust federated learning through
collaborative malicious gradient filtering", ICDCS 2022, Algorithm 1, plain SignGuard).

1. Norm filter: with M the median L2 norm of the n updates, keep the updates whose norm lies in
   [lower·M, upper·M].
2. Sign filter: draw a random ⌈frac·P⌉ of the P coordinates (from `ctx.generator`); each
   update's features are the shares of positive, zero and negative entries there, each feature
   divided by its largest value over the updates (as in the authors' code); cluster the
   features with mean shift (scikit-learn's `MeanShift`: flat kernel, all points as seeds,
   bandwidth `bandwidth` or else `estimate_bandwidth(features, quantile)`; where that
   estimate is 0, many rows sharing their features exactly, each distinct feature vector is
   its own cluster, mean shift's limit as the bandwidth vanishes) and keep the largest
   cluster (ties: the one holding the lowest row).
3. The good set is the intersection of the two; each of its updates is clipped to norm M
   (`flwbc.transforms.clip_by_norm`) and the aggregate is their plain mean.

Assumes the benign updates are the majority, have similar norms and similar sign statistics,
while malicious ones differ in norm or in sign pattern (sign flipping, ALIE-like shifts of many
coordinates). Rank-based: the FedAvg weights are ignored.

Deviations: the authors' code samples a contiguous block of coordinates at a random offset, the
paper (followed here) a random subset; the norm bounds are inclusive (M = 0 keeps zero
updates); an empty good set gives a zero aggregate; the bandwidth quantile defaults to 0.5,
not sklearn's 0.3, which with ~10 updates splits the benign ones into several clusters (the
paper does not state its bandwidth). The median is numpy's (mean of the two
middle norms for even n). Needs scikit-learn.

`Aggregate.flagged` lists the rows outside the good set; `info` holds `selected` (client ids,
or row positions after a step that merged rows), `norm_rejected` and `sign_rejected` (the same,
for each filter) and `clusters` (how many mean shift found).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from flwbc.errors import FlwbcError
from flwbc.plugin_options import PluginOptions
from flwbc.server.base import Aggregate, Aggregator, RoundContext, register_aggregator
from flwbc.server.median import coordinate_median
from flwbc.transforms import clip_by_norm


class SignGuardOptions(PluginOptions):
    lower: float = Field(
        0.1,
        ge=0,
        allow_inf_nan=False,
        description="norm filter: smallest norm kept, as a multiple of the median norm",
    )
    upper: float = Field(
        3.0,
        gt=0,
        allow_inf_nan=False,
        description="norm filter: largest norm kept, as a multiple of the median norm",
    )
    frac: float = Field(
        0.1, gt=0, le=1, description="share of the coordinates whose signs are counted"
    )
    bandwidth: float | None = Field(
        None,
        gt=0,
        description="mean shift bandwidth (None: sklearn's estimate_bandwidth with `quantile`)",
    )
    quantile: float = Field(
        0.5,
        gt=0,
        le=1,
        description="estimate_bandwidth's quantile: the "
        "bandwidth is the mean distance to the ⌊quantile·n⌋-th neighbour",
    )


def sign_features(sub: Tensor) -> np.ndarray:
    """[n, 3]: each row's shares of positive, zero and negative entries of `sub` [n, b], each
    column divided by its largest value (+1e-8, so an all-zero column stays zero)."""
    feats = torch.stack([(sub > 0).sum(1), (sub == 0).sum(1), (sub < 0).sum(1)], dim=1)
    shares = feats.double().cpu().numpy() / sub.shape[1]
    return shares / (shares.max(axis=0) + 1e-8)


def largest_cluster(
    features: np.ndarray, bandwidth: float | None, quantile: float
) -> tuple[list[int], int]:
    """Rows of the largest mean shift cluster of `features` (ties: the cluster holding the
    lowest row) and how many clusters there are."""
    try:
        from sklearn.cluster import MeanShift, estimate_bandwidth
    except ImportError:
        raise FlwbcError(
            "aggregator 'signguard' needs scikit-learn (pip install scikit-learn)"
        ) from None
    if features.shape[0] == 1:
        return [0], 1
    bw = bandwidth or float(estimate_bandwidth(features, quantile=quantile))
    if bw > 0:
        labels = MeanShift(bandwidth=bw).fit(features).labels_
    else:  # mean shift's limit of a vanishing bandwidth (sklearn refuses 0)
        labels = np.unique(features, axis=0, return_inverse=True)[1].reshape(-1)
    counts = np.bincount(labels)
    first_row = [int(np.flatnonzero(labels == c)[0]) for c in range(len(counts))]
    best = min(range(len(counts)), key=lambda c: (-counts[c], first_row[c]))
    return [int(i) for i in np.flatnonzero(labels == best)], len(counts)


@register_aggregator("signguard")
class SignGuard(Aggregator):
    rank_based = True
    Options = SignGuardOptions

    def __init__(
        self,
        lower: float = 0.1,
        upper: float = 3.0,
        frac: float = 0.1,
        bandwidth: float | None = None,
        quantile: float = 0.5,
    ) -> None:
        if lower >= upper:
            raise ValueError(f"lower must be below upper (got {lower} >= {upper})")
        self.lower, self.upper, self.frac = lower, upper, frac
        self.bandwidth, self.quantile = bandwidth, quantile

    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        n, p = updates.shape
        self.check(n)
        norms = updates.norm(dim=1)
        med = coordinate_median(norms.unsqueeze(1))[0]
        by_norm = (norms >= self.lower * med) & (norms <= self.upper * med)
        norm_ok = set(torch.nonzero(by_norm).flatten().tolist())
        b = min(p, max(1, math.ceil(self.frac * p)))
        coords = torch.randperm(p, generator=ctx.generator, device=ctx.generator.device)[:b]
        cluster, clusters = largest_cluster(
            sign_features(updates[:, coords.to(updates.device)]), self.bandwidth, self.quantile
        )
        sign_ok = set(cluster)
        kept = sorted(norm_ok & sign_ok)
        rows = ctx.client_ids if ctx.rows_are_clients else list(range(n))
        info = {
            "selected": [int(rows[i]) for i in kept],
            "norm_rejected": [int(rows[i]) for i in range(n) if i not in norm_ok],
            "sign_rejected": [int(rows[i]) for i in range(n) if i not in sign_ok],
            "clusters": clusters,
        }
        flagged = [i for i in range(n) if i not in kept]
        if not kept:
            return Aggregate(updates.new_zeros(p), info, flagged=flagged)
        clipped, _ = clip_by_norm(updates[kept], float(med))
        return Aggregate(clipped.mean(dim=0), info, flagged=flagged)

"""SignGuard (Xu, Huang, Wang & Hu, "SignGuard: Byzantine-robust federated learning through
collaborative malicious gradient filtering", ICDCS 2022, Algorithm 1, plain SignGuard; official
code JianXu95/SignGuard, `aggregators/signguard.py`, `signguard_multiclass`).

1. Norm filter: with M the median L2 norm of the n updates (numpy's: the mean of the two
   middle norms for even n), keep the updates whose norm lies strictly between lower·M and
   upper·M.
2. Sign filter: take b = ⌊frac·P⌋ of the P coordinates (at least 1), drawn from
   `ctx.generator`; each update's features are the shares of positive, zero and negative
   entries there, each feature divided by its largest value over the updates (+1e-8); cluster
   the features with mean shift as the authors' code does: scikit-learn's
   `MeanShift(bandwidth, bin_seeding=True, cluster_all=False)` with the bandwidth
   `estimate_bandwidth(features, quantile=0.5, n_samples=50)`, so the seeds are the occupied
   bins of a grid of that width and a point that no cluster's window claims gets no cluster
   (label −1) and is rejected. The largest cluster is kept (ties: the lowest label, i.e. the
   cluster scikit-learn ranks first by the points in its window).
3. The good set is the intersection of the two; each of its updates is clipped to the norm
   M' (`flwbc.transforms.clip_by_norm`) and the aggregate is their plain mean. M' is the
   median norm as torch computes it in the authors' code, the lower of the two middle norms
   for even n.

Assumes the benign updates are the majority, have similar norms and similar sign statistics,
while malicious ones differ in norm or in sign pattern (sign flipping, ALIE-like shifts of many
coordinates). Rank-based: the FedAvg weights are ignored.

Options beyond the paper's thresholds and fraction:
- `coordinates` ("random"): "random" draws b coordinates without replacement, as the paper
  describes; "block" takes b contiguous coordinates at an offset drawn uniformly from
  [0, P − b), as the authors' code does (in the flat parameter layout a block lies mostly in
  one layer).
- `bin_seeding` (True) and `cluster_all` (False): scikit-learn's mean shift options, set as
  in the authors' code. `bin_seeding=False, cluster_all=True` (every point a seed, every
  point assigned to its nearest centre) is how flwbc clustered until December 2026; it selects
  the authors' set in 30 of the 60 rounds (sign flipping, sign-pattern, norm and sparse
  attacks, 8-20 clients) that tests/server/test_authors_code.py draws.
- `bandwidth` (None: estimated as above, with `quantile`, 0.5 as in the authors' code).

Deviations from the authors' code, where it has no answer: where the estimated bandwidth is 0
(many rows sharing their features exactly; scikit-learn refuses it) each distinct feature
vector is its own cluster, mean shift's limit as the bandwidth vanishes; if mean shift claims
no point, or the good set is empty, the aggregate is zero (the authors' code fails on an empty
argmax or averages nothing). Needs scikit-learn.

`Aggregate.flagged` lists the rows outside the good set; `info` holds `selected` (client ids,
or row positions after a step that merged rows), `norm_rejected` and `sign_rejected` (the same,
for each filter) and `clusters` (how many mean shift found, unclaimed points not counted).
"""

from __future__ import annotations

from typing import Any, Literal

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
        description="norm filter: norms above this multiple of the median norm are kept",
    )
    upper: float = Field(
        3.0,
        gt=0,
        allow_inf_nan=False,
        description="norm filter: norms below this multiple of the median norm are kept",
    )
    frac: float = Field(
        0.1, gt=0, le=1, description="share of the coordinates whose signs are counted"
    )
    coordinates: Literal["random", "block"] = Field(
        "random",
        description="which coordinates: a random subset (the paper) or a contiguous block at "
        "a random offset (the authors' code)",
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
    bin_seeding: bool = Field(
        True, description="mean shift seeds on a grid of bins, as the authors' code"
    )
    cluster_all: bool = Field(
        False,
        description="assign every point to a cluster (False: points outside every cluster's "
        "window are rejected, as the authors' code)",
    )


def sign_features(sub: Tensor) -> np.ndarray:
    """[n, 3] float32: each row's shares of positive, zero and negative entries of `sub`
    [n, b], each column divided by its largest value + 1e-8 (so an all-zero column stays zero),
    in float32 as the authors' code computes them."""
    counts = torch.stack([(sub > 0).sum(1), (sub == 0).sum(1), (sub < 0).sum(1)], dim=1)
    shares = counts.to(torch.float32).cpu() / sub.shape[1]
    return (shares / (shares.max(dim=0).values + 1e-8)).numpy()


def largest_cluster(
    features: np.ndarray,
    bandwidth: float | None,
    quantile: float,
    bin_seeding: bool = True,
    cluster_all: bool = False,
) -> tuple[list[int], int]:
    """Rows of the largest mean shift cluster of `features` (ties: the lowest label) and how
    many clusters there are; rows that no cluster claims (label −1) are in none."""
    try:
        from sklearn.cluster import MeanShift, estimate_bandwidth
    except ImportError:
        raise FlwbcError(
            "aggregator 'signguard' needs scikit-learn (pip install scikit-learn)"
        ) from None
    if features.shape[0] == 1:
        return [0], 1
    bw = bandwidth or float(estimate_bandwidth(features, quantile=quantile, n_samples=50))
    if bw > 0:
        ms = MeanShift(bandwidth=bw, bin_seeding=bin_seeding, cluster_all=cluster_all)
        labels = ms.fit(features).labels_
    else:  # mean shift's limit of a vanishing bandwidth (sklearn refuses 0)
        first = np.unique(features, axis=0, return_index=True, return_inverse=True)
        order = np.argsort(first[1])  # label distinct vectors by their first row
        labels = np.argsort(order)[first[2].reshape(-1)]
    counts = np.bincount(labels[labels >= 0], minlength=int(labels.max()) + 1)
    if len(counts) == 0 or counts.max() == 0:
        return [], 0
    best = int(np.argmax(counts))
    return [int(i) for i in np.flatnonzero(labels == best)], int((counts > 0).sum())


def torch_median(values: Tensor) -> float:
    """torch's median: the lower of the two middle values for an even count."""
    return float(values.median())


@register_aggregator("signguard")
class SignGuard(Aggregator):
    rank_based = True
    Options = SignGuardOptions

    def __init__(self, **options: Any) -> None:
        o = SignGuardOptions(**options)
        if o.lower >= o.upper:
            raise ValueError(f"lower must be below upper (got {o.lower} >= {o.upper})")
        self.lower, self.upper, self.frac = o.lower, o.upper, o.frac
        self.coordinates = o.coordinates
        self.bandwidth, self.quantile = o.bandwidth, o.quantile
        self.bin_seeding, self.cluster_all = o.bin_seeding, o.cluster_all

    def sample(self, p: int, generator: torch.Generator) -> Tensor:
        """The coordinates whose signs are counted this round."""
        b = min(p, max(1, int(self.frac * p)))
        if self.coordinates == "block":
            start = 0
            if p > b:
                start = int(
                    torch.randint(0, p - b, (1,), generator=generator, device=generator.device)
                )
            return torch.arange(start, start + b)
        return torch.randperm(p, generator=generator, device=generator.device)[:b]

    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        n, p = updates.shape
        self.check(n)
        norms = updates.norm(dim=1)
        med = coordinate_median(norms.unsqueeze(1))[0]
        by_norm = (norms > self.lower * med) & (norms < self.upper * med)
        norm_ok = set(torch.nonzero(by_norm).flatten().tolist())
        coords = self.sample(p, ctx.generator).to(updates.device)
        cluster, clusters = largest_cluster(
            sign_features(updates[:, coords]),
            self.bandwidth,
            self.quantile,
            self.bin_seeding,
            self.cluster_all,
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
        clipped, _ = clip_by_norm(updates[kept], torch_median(norms))
        return Aggregate(clipped.mean(dim=0), info, flagged=flagged)

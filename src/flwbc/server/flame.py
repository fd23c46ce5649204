"""FLAME (Nguyen et al., USENIX Security 2022, "FLAME: Taming Backdoors in Federated
Learning", Algorithm 1).

Each round, of n updates Δ_i:

1. clustering: HDBSCAN (`sklearn.cluster.HDBSCAN`, metric "precomputed") on the pairwise cosine
   distances 1 − cos(Δ_i, Δ_j), with min_cluster_size = ⌊n/2⌋ + 1, min_samples = 1 and a single
   cluster allowed; the rows of the majority cluster are kept, the others (HDBSCAN's noise)
   are excluded. If HDBSCAN finds no cluster at all, every row is kept;
2. adaptive clipping: S = the median of the L2 norms ‖Δ_i‖ of all n updates, and every kept
   update is scaled to norm at most S;
3. the aggregate is the plain mean of the clipped kept updates plus Gaussian noise of std
   σ = λ·S per coordinate, drawn from the round's server generator (`ctx.generator`).

The paper clusters the local models W_i = G + Δ_i and measures e_i = ‖G − W_i‖; here the rule
sees updates, so the distances are cosine distances between the updates Δ_i: the models'
cosine is dominated by the shared global model G and tells little apart, while ‖G − W_i‖ is
exactly ‖Δ_i‖, and the paper's aggregate G + mean(clipped W_i − G) is G + mean(clipped Δ_i).
The FedAvg weights are not used (`rank_based`), as the paper averages uniformly.

Options: `lam` (0.001, the paper's noise level λ for image classification; 0 turns the noise
off), `min_cluster_size` (None: ⌊n/2⌋ + 1), `min_samples` (1). Needs n ≥ 2 updates per round.

`info` holds the kept client ids, the clipping bound S and σ; `flagged` lists the rows outside
the majority cluster.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from flwbc.errors import FlwbcError
from flwbc.plugin_options import StrictOptions
from flwbc.postagg.noise import add_noise
from flwbc.server.base import Aggregate, Aggregator, RoundContext, register_aggregator
from flwbc.transforms import clip_by_norm


def cosine_distances(updates: Tensor) -> np.ndarray:
    """[n, n] cosine distances 1 − cos(Δ_i, Δ_j) in float64, exactly symmetric, zero on the
    diagonal and clipped to [0, 2] (a zero update has distance 1 to every other one)."""
    x = updates.detach().to(torch.float64)  # on the updates' device: only [n, n] leaves it
    norms = x.norm(dim=1, keepdim=True)
    unit = x / torch.where(norms > 0, norms, torch.ones_like(norms))
    d = 1.0 - (unit @ unit.T).cpu()
    d = ((d + d.T) / 2).clamp(0.0, 2.0)
    d.fill_diagonal_(0.0)
    return d.numpy()


def majority_cluster(dist: np.ndarray, min_cluster_size: int, min_samples: int) -> list[int]:
    """Rows of the largest HDBSCAN cluster on the precomputed distances `dist` (ties: the lower
    label); all rows if HDBSCAN labels every row noise."""
    from sklearn.cluster import HDBSCAN  # here: importing scikit-learn costs every run 1-2 s

    model = HDBSCAN(
        metric="precomputed",
        min_cluster_size=min_cluster_size,
        min_samples=min_samples,
        allow_single_cluster=True,
        copy=True,
    )
    labels = model.fit(dist).labels_
    found = sorted(set(int(v) for v in labels) - {-1})
    if not found:
        return list(range(len(labels)))
    best = max(found, key=lambda c: (int(np.sum(labels == c)), -c))
    return [i for i, v in enumerate(labels) if v == best]


class FlameOptions(StrictOptions):
    lam: float = Field(
        0.001,
        ge=0,
        description="λ: noise std per coordinate as a multiple of the clipping bound S (the "
        "paper's 0.001 for image classification); 0: no noise",
    )
    min_cluster_size: int | None = Field(
        None, ge=2, description="HDBSCAN's min_cluster_size; default: ⌊n/2⌋ + 1"
    )
    min_samples: int = Field(1, ge=1, description="HDBSCAN's min_samples")


@register_aggregator("flame")
class Flame(Aggregator):
    rank_based = True
    Options = FlameOptions

    def __init__(self, **options: Any) -> None:
        o = FlameOptions(**options)
        self.lam = float(o.lam)
        self.min_cluster_size = o.min_cluster_size
        self.min_samples = o.min_samples

    def cluster_size(self, n: int) -> int:
        return n // 2 + 1 if self.min_cluster_size is None else self.min_cluster_size

    def check(self, num_updates: int) -> None:
        if num_updates < 2:
            raise FlwbcError(
                f"aggregator '{self.name}' needs at least 2 updates per round (n={num_updates})"
            )
        size = self.cluster_size(num_updates)
        if size > num_updates:
            raise FlwbcError(
                f"aggregator '{self.name}' needs min_cluster_size <= n "
                f"(min_cluster_size={size}, n={num_updates})"
            )

    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        n = updates.shape[0]
        self.check(n)
        kept = majority_cluster(
            cosine_distances(updates), self.cluster_size(n), min(self.min_samples, n)
        )
        bound = median_norm(updates)
        clipped, _ = clip_by_norm(updates[kept], bound)
        sigma = self.lam * bound
        update = add_noise(clipped.mean(dim=0), "gaussian", sigma, ctx.generator)
        kept_set = set(kept)
        flagged = [i for i in range(n) if i not in kept_set]
        info = {
            "kept": [int(ctx.client_ids[i]) for i in kept],
            "clip_bound": bound,
            "sigma": sigma,
        }
        return Aggregate(update, info, flagged=flagged)


def median_norm(updates: Tensor) -> float:
    """The median of the rows' L2 norms: the middle one, or the mean of the two middle ones for
    an even count (`torch.median` would return the lower one)."""
    norms = updates.norm(dim=1).to(torch.float64).sort().values
    m = norms.shape[0] // 2
    return float(norms[m]) if norms.shape[0] % 2 else float((norms[m - 1] + norms[m]) / 2)

"""Divide-and-Conquer, DnC (Shejwalkar & Houmansadr, "Manipulating the Byzantine: optimizing
model poisoning attacks and defenses for federated learning", NDSS 2021, Algorithm 2).

`niters` times: draw b of the P coordinates at random (from `ctx.generator`; all of them when
b >= P), centre the n subsampled updates on their mean, take the top right-singular vector v
of the centred [n, b] matrix, score each update by its squared projection <x_i - μ, v>², and
keep the n - ⌈c·f⌉ updates with the lowest scores (ties: lower rows). The good set is the
intersection of the kept sets over the iterations; the aggregate is the plain mean of the
updates in it. Assumes at most f of the n updates are malicious and that they share a common
direction (the top singular direction) that sets them apart; needs n > ⌈c·f⌉.

Rank-based like the paper's mean over the good set: the FedAvg weights are ignored.
Deviations: none in the computation. The authors' release (vrt1shjwlkr/NDSS21-Model-Poisoning)
holds the attacks' notebooks but no DnC; this follows the paper's Algorithm 2. The paper keeps
"n − c·m" updates, which is no count when c·f is not an integer: the implementations that
exist keep `int(n − c·f)`, i.e. remove ⌈c·f⌉ (SignGuard's authors, JianXu95/SignGuard
`aggregators/DnC.py`; FLPoison), and so does this rule (until December 2026 it removed ⌊c·f⌋:
n = 12, f = 3, c = 1.5 now keeps 7, before 8). If the kept sets have no update in common the
aggregate is zero (the paper leaves that case open). An update with a non-finite entry (a client
whose model diverged) cannot be projected: it is flagged and left out, and DnC runs on the
others (zero when no more than ⌈c·f⌉ remain); the paper assumes finite updates.

`Aggregate.flagged` lists the rows outside the good set; `info["selected"]` the averaged ones
(client ids, or row positions when a pre-aggregation step merged rows).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from flwbc.errors import FlwbcError
from flwbc.plugin_options import PluginOptions
from flwbc.server.base import Aggregate, Aggregator, RoundContext, register_aggregator


class DnCOptions(PluginOptions):
    niters: int = Field(5, ge=1, description="iterations, each with its own coordinate sample")
    b: int = Field(10000, ge=1, description="coordinates sampled per iteration (all if >= P)")
    c: float = Field(
        1.0,
        gt=0,
        allow_inf_nan=False,
        description="filtering fraction: each iteration removes the ⌈c·f⌉ highest scores",
    )
    f: int = Field(1, ge=0, description="malicious updates expected per round")


def dnc_keep(sub: Tensor, keep: int) -> Tensor:
    """Rows of `sub` [n, b] with the `keep` lowest DnC outlier scores (squared projections of
    the centred rows on the top right-singular vector), ascending row order."""
    centred = sub - sub.mean(dim=0)
    v = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    scores = (centred @ v).pow(2)
    return torch.sort(torch.sort(scores, stable=True).indices[:keep]).values


@register_aggregator("dnc")
class DivideAndConquer(Aggregator):
    rank_based = True
    Options = DnCOptions

    def __init__(self, **options: Any) -> None:
        o = DnCOptions(**options)
        self.niters, self.b, self.c, self.f = o.niters, o.b, o.c, o.f

    def removed(self) -> int:
        """⌈c·f⌉, the count `int(n − c·f)` leaves out for any n ≥ c·f."""
        return math.ceil(self.c * self.f)

    def check(self, num_updates: int) -> None:
        if num_updates <= self.removed():
            raise FlwbcError(
                f"aggregator '{self.name}' needs n > ⌈c·f⌉ updates per round "
                f"(n={num_updates}, ⌈c·f⌉={self.removed()})"
            )

    def coordinates(self, p: int, generator: torch.Generator) -> Tensor | None:
        """One iteration's coordinate sample (None: all coordinates)."""
        if self.b >= p:
            return None
        return torch.randperm(p, generator=generator, device=generator.device)[: self.b]

    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        n, p = updates.shape
        self.check(n)
        # a row with a non-finite entry (a client whose model diverged) cannot be projected:
        # it is left out, and DnC runs on the others (the paper assumes finite updates)
        finite = torch.isfinite(updates).all(dim=1).tolist()
        rows_ok = [i for i in range(n) if finite[i]]
        ok = updates if len(rows_ok) == n else updates[rows_ok]
        keep = len(rows_ok) - self.removed()
        good = set(range(len(rows_ok))) if keep > 0 else set()
        for _ in range(self.niters if keep > 0 else 0):
            coords = self.coordinates(p, ctx.generator)
            sub = ok if coords is None else ok[:, coords.to(ok.device)]
            good &= set(dnc_keep(sub, keep).tolist())
        kept = sorted(rows_ok[i] for i in good)
        good = set(kept)
        flagged = [i for i in range(n) if i not in good]
        rows = ctx.client_ids if ctx.rows_are_clients else list(range(n))
        info = {"selected": [int(rows[i]) for i in kept]}
        if not kept:  # disjoint kept sets: nothing left to trust this round
            return Aggregate(updates.new_zeros(p), info, flagged=flagged)
        return Aggregate(updates[kept].mean(dim=0), info, flagged=flagged)

"""Bulyan over Krum (El Mhamdi, Guerraoui & Rouault 2018, "The hidden vulnerability of
distributed learning in Byzantium").

With n updates and at most f Byzantine (n >= 4f + 3):

1. Select θ = n - 2f updates by applying Krum repeatedly: score the remaining set with Krum
   (each update's sum of squared L2 distances to its max(r - f - 2, 0) nearest other remaining
   updates, r = the remaining count, same f throughout), move the lowest-scored one (ties: the
   lowest row of `updates`) to the selection, and repeat.
2. For each coordinate, of the θ selected values keep the β = θ - 2f closest to their
   coordinate-wise median (numpy-style median; ties in closeness: earlier-selected first) and
   average them (plain mean).

Rank-based: the FedAvg weights are ignored. `info["selected"]` lists the selected client ids and
`info["selected_pos"]` their rows, in selection order; the 2f rows never selected are flagged
(the round's detection record).

In the last selection steps only r = 2f + 1 ... updates remain, so for f = 1 the final Krum scores
use no neighbour at all (every score is 0, the lowest row wins) and for f <= 2 they use at most
one, where the closest pair always ties: with f in {1, 2} the selection then depends on the row
order, as in the usual implementations of θ = n - 2f.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from flwbc.errors import FlwbcError
from flwbc.plugin_options import StrictOptions
from flwbc.server.base import Aggregate, Aggregator, RoundContext, register_aggregator
from flwbc.server.krum import krum_scores, pairwise_sq_dists
from flwbc.server.median import coordinate_median


class BulyanOptions(StrictOptions):
    f: int = Field(
        1, ge=0, description="Byzantine updates tolerated per round (needs n >= 4f + 3 updates)"
    )


@register_aggregator("bulyan")
class Bulyan(Aggregator):
    rank_based = True
    Options = BulyanOptions

    def __init__(self, **options: Any) -> None:
        o = BulyanOptions(**options)
        self.f = o.f

    def check(self, num_updates: int) -> None:
        if num_updates < 4 * self.f + 3:
            raise FlwbcError(
                f"aggregator '{self.name}' needs n >= 4f + 3 updates per round "
                f"(n={num_updates}, f={self.f})"
            )

    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        n = updates.shape[0]
        self.check(n)
        f = self.f
        theta, beta = n - 2 * f, n - 4 * f
        dists = pairwise_sq_dists(updates)
        remaining = list(range(n))  # ascending, so the first minimum is the lowest row
        chosen: list[int] = []
        for _ in range(theta):
            idx = torch.tensor(remaining, device=updates.device)
            scores = krum_scores(dists[idx][:, idx], f)
            chosen.append(remaining.pop(int(torch.argmin(scores))))
        sel = updates[torch.tensor(chosen, device=updates.device)]  # [θ, P]
        med = coordinate_median(sel)
        closest = torch.sort((sel - med).abs(), dim=0, stable=True).indices[:beta]  # [β, P]
        update = sel.gather(0, closest).mean(dim=0)
        return Aggregate(
            update,
            {"selected": [int(ctx.client_ids[p]) for p in chosen], "selected_pos": chosen},
            flagged=remaining,
        )

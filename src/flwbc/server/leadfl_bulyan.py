"""The rule LeadFL's official code runs as "bulyan" (Zhu et al., "LeadFL: Client Self-Defense
against Model Poisoning in Federated Learning", ICML 2023; chaoyitud/LeadFL at 06ecc98,
`fltk/strategy/aggregation/bulyan.py:15-33`), which is not El Mhamdi et al.'s Bulyan (that is
`bulyan`): it has no repeated Krum selection and no coordinate-wise trimming.

Every update gets a Krum score (Blanchard et al. 2017; `flwbc.server.krum`): the sum of its
squared L2 distances to its n − f − 2 nearest other updates. The updates are ranked by score,
ascending, with a stable sort (ties: the lower row first); the `skip` best-ranked are dropped
and the aggregate is the plain (unweighted) mean of the next `keep`. The defaults reproduce the
official code at its template's n = 10 updates per round: it sums each model's 7 smallest
squared distances with its own (0) among them (`candidate_num = 7`, :16, :26-27), that is 6
neighbours = n − f − 2 with f = 2, then averages the sorted models `[1:multi_krum - 1]` with
`multi_krum = 5` (:15, :29-33), that is ranks 2-4: skip 1, keep 3. Rank-based: the FedAvg
weights (the official call passes client sizes, unused) are ignored. `info["selected"]` lists
the averaged client ids and `info["selected_pos"]` their rows, best score first; every other
row, the dropped best-ranked included, is flagged (the round's detection record).

Departures from the official code:
- it counts a fixed 6 neighbours whatever n; this rule counts n − f − 2, so at another n set
  f = n − 8 to match it (with n < 7 the official code sums every other distance);
- it sorts in the order the clients' models arrive (the round's selection order there); here in
  row order, which matters only for exactly tied scores;
- it computes distances between whole `state_dict`s, so with its BatchNorm model the running
  means and variances (updated in training, never used by the always-training forward) count
  too; flwbc's `fmnist_cnn_bn` has no such buffers, so only parameters count here; and it sums
  per-tensor float32 norms of model differences where this rule sums over the flat update
  differences (rounding only);
- with fewer than skip + keep updates it averages what the slice leaves (and fails with none);
  this rule refuses such n before the first round, and also an n with no neighbour (n < f + 3).
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


class LeadFLBulyanOptions(StrictOptions):
    f: int = Field(
        2,
        ge=0,
        description="Krum's f: each score sums the n - f - 2 nearest squared distances (the "
        "official code's fixed 6 neighbours at n = 10)",
    )
    skip: int = Field(
        1, ge=0, description="best-scored updates dropped (the official code drops rank 1)"
    )
    keep: int = Field(
        3, ge=1, description="updates averaged after the dropped ones (official: ranks 2-4)"
    )


@register_aggregator("leadfl_bulyan")
class LeadFLBulyan(Aggregator):
    """LeadFL's code's "bulyan": plain mean of the Krum ranks skip+1..skip+keep (2-4)."""

    rank_based = True
    Options = LeadFLBulyanOptions

    def __init__(self, **options: Any) -> None:
        o = LeadFLBulyanOptions(**options)
        self.f, self.skip, self.keep = o.f, o.skip, o.keep

    def check(self, num_updates: int) -> None:
        n, need = num_updates, max(self.skip + self.keep, self.f + 3)
        if n < need:
            raise FlwbcError(
                f"aggregator '{self.name}' needs n >= max(skip + keep, f + 3) updates per round "
                f"(n={n}, f={self.f}, skip={self.skip}, keep={self.keep})"
            )

    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        n = updates.shape[0]
        self.check(n)
        scores = krum_scores(pairwise_sq_dists(updates), self.f)
        ranked = torch.sort(scores, stable=True).indices
        chosen = ranked[self.skip : self.skip + self.keep]
        positions = [int(p) for p in chosen]
        kept = set(positions)
        return Aggregate(
            updates[chosen].mean(dim=0),
            {
                "selected": [int(ctx.client_ids[p]) for p in positions],
                "selected_pos": positions,
                "dropped_pos": [int(p) for p in ranked[: self.skip]],
            },
            flagged=[r for r in range(n) if r not in kept],
        )

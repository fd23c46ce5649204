"""Krum and Multi-Krum (Blanchard et al. 2017, "Machine learning with adversaries: Byzantine
tolerant gradient descent").

For n updates of which at most f are Byzantine, the Krum score of update i is the sum of the
squared L2 distances from x_i to its n - f - 2 nearest other updates.

- `krum` returns the update with the lowest score (ties: the lowest row of `updates`).
- `multikrum` returns the plain (uniform) mean of the m updates with the lowest scores, the
  scores computed once on all n updates (ties: lower rows first); m defaults to n - f.

Both need n > 2f + 2 and are rank-based: the FedAvg weights are ignored. `info["selected"]`
lists the chosen client ids and `info["selected_pos"]` their rows, best score first; the rows
left out are flagged (the round's detection record).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from flwbc.errors import FlwbcError
from flwbc.plugin_options import StrictOptions
from flwbc.server.base import Aggregate, Aggregator, RoundContext, register_aggregator


def pairwise_sq_dists(updates: Tensor) -> Tensor:
    """[K, K] squared L2 distances between the rows of `updates` [K, P].

    Computed from the differences one row at a time (no Gram-matrix cancellation, O(K·P)
    memory) and made exactly symmetric, so that tied scores really tie.
    """
    k = updates.shape[0]
    d = torch.empty((k, k), dtype=updates.dtype, device=updates.device)
    for i in range(k):
        d[i] = (updates - updates[i]).pow(2).sum(dim=1)
    return (d + d.T) / 2


def krum_scores(dists: Tensor, f: int) -> Tensor:
    """Krum scores of the n points whose squared distances are `dists` [n, n]: each point's sum
    of squared distances to its max(n - f - 2, 0) nearest other points."""
    n = dists.shape[0]
    neighbours = max(n - f - 2, 0)
    if neighbours == 0:
        return dists.new_zeros(n)
    others = dists.clone().fill_diagonal_(float("inf"))
    return others.sort(dim=1).values[:, :neighbours].sum(dim=1)


def _selection_info(positions: list[int], ctx: RoundContext) -> dict[str, list[int]]:
    return {
        "selected": [int(ctx.client_ids[p]) for p in positions],
        "selected_pos": positions,
    }


def _unselected(positions: list[int], n: int) -> list[int]:
    """The rows a selection rule left out: what it flags as suspicious."""
    kept = set(positions)
    return [r for r in range(n) if r not in kept]


def _check_krum_bound(name: str, n: int, f: int) -> None:
    if n <= 2 * f + 2:
        raise FlwbcError(f"aggregator '{name}' needs n > 2f + 2 updates per round (n={n}, f={f})")


_F_DESCRIPTION = "Byzantine updates tolerated per round (needs n > 2f + 2 updates)"


class KrumOptions(StrictOptions):
    f: int = Field(1, ge=0, description=_F_DESCRIPTION)


class MultiKrumOptions(StrictOptions):
    f: int = Field(1, ge=0, description=_F_DESCRIPTION)
    m: int | None = Field(
        None, ge=1, description="updates averaged, lowest Krum scores first; default: n - f"
    )


@register_aggregator("krum")
class Krum(Aggregator):
    rank_based = True
    Options = KrumOptions

    def __init__(self, **options: Any) -> None:
        o = KrumOptions(**options)
        self.f = o.f

    @property
    def krum_f(self) -> int:
        return self.f

    def check(self, num_updates: int) -> None:
        _check_krum_bound(self.name, num_updates, self.f)

    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        self.check(updates.shape[0])
        scores = krum_scores(pairwise_sq_dists(updates), self.f)
        best = int(torch.argmin(scores))  # the first minimum: ties go to the lowest row
        return Aggregate(
            updates[best].clone(),
            _selection_info([best], ctx),
            flagged=_unselected([best], len(updates)),
        )


@register_aggregator("multikrum")
class MultiKrum(Aggregator):
    rank_based = True
    Options = MultiKrumOptions

    def __init__(self, **options: Any) -> None:
        o = MultiKrumOptions(**options)
        self.f, self.m = o.f, o.m

    @property
    def krum_f(self) -> int:
        return self.f

    def selected_count(self, num_updates: int) -> int:
        return num_updates - self.f if self.m is None else self.m

    def check(self, num_updates: int) -> None:
        _check_krum_bound(self.name, num_updates, self.f)
        m = self.selected_count(num_updates)
        if not 1 <= m <= num_updates:
            raise FlwbcError(f"aggregator '{self.name}' needs 1 <= m <= n (m={m}, n={num_updates})")

    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        n = updates.shape[0]
        self.check(n)
        scores = krum_scores(pairwise_sq_dists(updates), self.f)
        order = torch.sort(scores, stable=True).indices[: self.selected_count(n)]
        positions = [int(p) for p in order]
        return Aggregate(
            updates[order].mean(dim=0),
            _selection_info(positions, ctx),
            flagged=_unselected(positions, n),
        )

"""Mimic (Karimireddy, He & Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets via
Bucketing", ICLR 2022): every attacker sends a copy of one benign update, so that on
heterogeneous data a robust aggregator over-weights that one client and under-represents the
others; nothing the attackers send is an outlier.

Which benign update: the one with the largest |⟨g_i − μ, z⟩| among the updates the attackers
see, μ their mean and z the top eigenvector of their covariance (1/(m−1))·Σ_i (g_i − μ)(g_i − μ)ᵀ.
z is computed exactly per round from the m × m Gram matrix of the centred updates (its top
eigenvector u gives X·z ∝ u, X the centred [m, P] matrix, so the P × P covariance is never
formed); ties go to the first seen update, and when all seen updates are equal the first is
sent. If the top eigenvalue is repeated, z is not unique and the pick follows the eigensolver's
basis.

Deviations from the paper and its code (github.com/epfml/byzantine-robust-noniid-optimizer,
`codes/attacks/mimic.py`, `MimicVariantAttacker`). (a) There z is estimated online (a power
iteration from a seeded random start, averaged over a warm-up phase) and after the warm-up the
mimicked worker is fixed for the rest of training. With partial participation (e.g. 10 of 100
clients a round) that worker is usually not in the next round, and a state carried across
rounds would break the bit-exact resume of interrupted runs, so here the choice is made every
round, from that round's updates, with z exact. (b) The code takes the largest signed ⟨g_i, z⟩
(the same order as the centred ⟨g_i − μ, z⟩), its z's sign set by the random start; an exact
eigenvector has no sign, so the largest |⟨g_i − μ, z⟩| is taken. For comparison, ByzFL
(LPD-EPFL/byzfl, `Mimic(epsilon)`) and the official plain `MimicAttacker` mimic a fixed worker
given by index (ByzFL default 0), with no eigen-analysis.

Knowledge: `omniscient` (the paper's: every benign update of the round) or `partial` (only the
attackers' own honest updates, so they mimic one of themselves).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from flwbc.attacks.base import register_attack
from flwbc.attacks.crafted import CraftedAttack, CraftedOptions
from flwbc.errors import FlwbcError

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


def mimic_choice(seen: Tensor) -> int:
    """The row of `seen` [m, P] with the largest |projection| on the top principal direction.
    A row with a non-finite entry (a benign client whose model diverged) has no projection and
    is never chosen: the choice is made among the finite rows (the first row if none is)."""
    finite = torch.isfinite(seen).all(dim=1)
    if not bool(finite.all()):
        rows = finite.nonzero().flatten()
        return int(rows[mimic_choice(seen[rows])]) if len(rows) else 0
    x = (seen - seen.mean(0)).double()
    if not bool(x.any()):  # one update, or all equal: no direction
        return 0
    gram = x @ x.T
    _, vecs = torch.linalg.eigh(gram)  # ascending eigenvalues
    return int(torch.argmax(vecs[:, -1].abs()))


@register_attack("mimic")
class Mimic(CraftedAttack[CraftedOptions]):
    """Send a copy of the seen benign update farthest along the top principal direction."""

    Options = CraftedOptions

    def forge(
        self, exp: ExperimentContext, t: int, seen: Tensor, own: Tensor, *, n: int, f: int
    ) -> Tensor:
        if len(seen) < 1:
            raise FlwbcError("attack 'mimic' needs at least 1 benign update to see")
        return seen[mimic_choice(seen)].expand(f, -1).clone()

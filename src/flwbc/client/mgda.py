"""Two-task MGDA loss balancing for one local step (Sener & Koltun, "Multi-task learning as
multi-objective optimization", NeurIPS 2018), as the blind-backdoor attacker of Bagdasaryan &
Shmatikov ("Blind backdoors in deep learning models", USENIX Security 2021) uses it and LeadFL's
official code runs it (chaoyitud/LeadFL at 06ecc98: `backdoors/attack.py`, `compute_blind_loss`,
with `backdoors/utils/min_norm_solvers.py`; its template's backdoor config sets
`loss_balance: MGDA`, `mgda_normalize: loss` and the task order backdoor, normal).

At every step, each task's gradient g_t is divided by its normaliser (with `loss`: min(L_t, 10),
plus 1e-5), and the scales are the convex combination (γ, 1 − γ) of minimum norm of the two
normalised gradients; the step's loss is γ·L_1 + (1 − γ)·L_2, the scales held constant. For two
vectors the minimum has a closed form, γ = ⟨v₂ − v₁, v₂⟩ / ‖v₁ − v₂‖², and the official
solver returns it unchanged, except at the ends: γ = 0.999 when ⟨v₁, v₂⟩ ≥ ‖v₁‖² and 0.001
when ⟨v₁, v₂⟩ ≥ ‖v₂‖² (tested in that order), never 1 or 0.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Normalize = Literal["loss", "l2", "none"]


def normalisers(grads: Tensor, losses: Tensor, normalize: Normalize) -> Tensor:
    """Each task's gradient normaliser [T, G] for gradients [T, G, P] and losses [T, G]:
    `loss` min(L, 10), `l2` ‖g‖, `none` 1 (the official `gradient_normalizers`' options)."""
    if normalize == "loss":
        return losses.clamp(max=10.0)
    if normalize == "l2":
        return grads.norm(dim=-1)
    return torch.ones_like(losses)


def min_norm_gamma(v11: Tensor, v12: Tensor, v22: Tensor) -> Tensor:
    """γ of the minimum-norm point γ·v₁ + (1 − γ)·v₂ from the inner products ⟨v₁,v₁⟩,
    ⟨v₁,v₂⟩, ⟨v₂,v₂⟩ (any shape), with the official solver's ends (0.999 and 0.001)."""
    inner = (v22 - v12) / (v11 + v22 - 2.0 * v12)
    return torch.where(
        v12 >= v11,
        torch.full_like(v11, 0.999),
        torch.where(v12 >= v22, torch.full_like(v11, 0.001), inner),
    )


def mgda_scales(grads: Tensor, losses: Tensor, normalize: Normalize = "loss") -> Tensor:
    """The two tasks' scales [2, G] for each of G clients, from the tasks' gradients [2, G, P]
    and losses [2, G] of one step."""
    if grads.shape[0] != 2:
        raise ValueError(f"MGDA here balances two tasks, got {grads.shape[0]}")
    v = grads / (normalisers(grads, losses, normalize) + 1e-5).unsqueeze(-1)
    v1, v2 = v[0], v[1]
    gamma = min_norm_gamma((v1 * v1).sum(-1), (v1 * v2).sum(-1), (v2 * v2).sum(-1))
    return torch.stack([gamma, 1.0 - gamma])

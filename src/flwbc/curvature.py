"""Hessian-free curvature of a client's loss at flat parameters: Hessian-vector products (by
double backpropagation, never a dense Hessian), Hutchinson's estimate of the diagonal, and the
spectral norm by power iteration (paper §4.3, Appendix B).

A loss is a function of the flat parameter vector only, e.g. `batch_loss(model, x, y)`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from flwbc.models import FlatModel

Loss = Callable[[Tensor], Tensor]


def batch_loss(model: FlatModel, x: Tensor, y: Tensor, batch_size: int = 1000) -> Loss:
    """The mean NLL of `model` on (x, y) as a function of the flat parameters, evaluated in
    chunks of `batch_size` (the same value and derivatives as one batch)."""
    n = len(y)

    def loss(w: Tensor) -> Tensor:
        total = w.new_zeros(())
        for s in range(0, n, batch_size):
            out = model(w, x[s : s + batch_size])
            total = total + F.nll_loss(out, y[s : s + batch_size], reduction="sum")
        return total / n

    return loss


def hvp(loss: Loss, w: Tensor, v: Tensor) -> Tensor:
    """H(w)·v, the Hessian of `loss` at `w` times v."""
    return grad_and_hvp(loss, w, v)[1]


def grad_and_hvp(loss: Loss, w: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """The gradient of `loss` at `w` and H(w)·v from one forward pass."""
    w = w.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(w), w, create_graph=True)
    (hv,) = torch.autograd.grad(g, w, grad_outputs=v.detach())
    return g.detach(), hv.detach()


def hutchinson_diag(loss: Loss, w: Tensor, samples: int, generator: torch.Generator) -> Tensor:
    """Hutchinson's unbiased estimate of diag(H): the mean of z ⊙ Hz over Rademacher z."""
    acc = torch.zeros_like(w)
    for _ in range(samples):
        z = torch.randint(0, 2, w.shape, generator=generator, device=w.device).to(w.dtype) * 2 - 1
        acc += z * hvp(loss, w, z)
    return acc / samples


def spectral_norm(
    loss: Loss, w: Tensor, generator: torch.Generator, iters: int = 30, tol: float = 1e-4
) -> float:
    """‖H‖₂, the largest |eigenvalue| of H(w), by power iteration on Hessian-vector products."""
    v = torch.randn(w.shape, generator=generator, device=w.device, dtype=w.dtype)
    v /= v.norm()
    est = 0.0
    for _ in range(iters):
        hv = hvp(loss, w, v)
        new = float(hv.norm())
        if new == 0.0:
            return 0.0
        v = hv / new
        if abs(new - est) <= tol * new:
            return new
        est = new
    return est

"""Targeted model poisoning (paper §4.1, eq. 3; Bhagoji et al. 2019).

Attackers share a malicious set D_M (`flwbc.client.malicious_set`). An attacker minimises
α·F_k + (1−α)·F_M for `epochs` local epochs. With α = 0 (the reference code) it trains on D_M
alone, one epoch being one pass over D_M; with α > 0 each step pairs a batch of its own data
with a batch of D_M.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from flwbc.client.local import Epoch, Term, epoch_batches
from flwbc.client.transform import ClientRun
from flwbc.curvature import Loss, batch_loss, hvp
from flwbc.rng import torch_generator


def malicious_plan(
    x_benign: Tensor,
    y_benign: Tensor,
    x_mal: Tensor,
    y_mal: Tensor,
    *,
    alpha: float,
    batch_size: int,
    epochs: int,
    generator: torch.Generator,
) -> Iterator[Epoch]:
    """Steps of eq. 3 for one attacker."""
    n_mal = len(y_mal)
    if alpha == 0.0:
        for batches in epoch_batches(n_mal, batch_size, epochs, generator):
            yield [[Term(x_mal[idx], y_mal[idx])] for idx in batches]
        return
    mal_stream = _cycle_batches(n_mal, batch_size, generator)
    for batches in epoch_batches(len(y_benign), batch_size, epochs, generator):
        epoch: Epoch = []
        for idx in batches:
            midx = next(mal_stream)
            epoch.append(
                [
                    Term(x_benign[idx], y_benign[idx], alpha),
                    Term(x_mal[midx], y_mal[midx], 1.0 - alpha),
                ]
            )
        yield epoch


def _cycle_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    while True:
        yield from torch.split(torch.randperm(n, generator=generator), batch_size)


def kernel_penalty_grad(loss: Loss, w_global: Tensor, lam: float) -> Callable[[Tensor], Tensor]:
    """The gradient of the kernel-regularised attack's penalty λ‖H(w − W)‖², with H the Hessian
    of the benign `loss` at the global model W (held fixed during the round): 2λ·H·H·(w − W),
    two Hessian-vector products per step, no dense Hessian."""

    def grad(w: Tensor) -> Tensor:
        d = w.detach() - w_global
        return (2.0 * lam) * hvp(loss, w_global, hvp(loss, w_global, d))

    return grad


def kernel_term(run: ClientRun, lam: float, batch: int) -> Callable[[Tensor], Tensor] | None:
    """The kernel-regularised attack's gradient term for attacker `run.client` in its round
    (None when λ = 0): H the Hessian of the loss of `batch` of its own images, drawn from the
    stream (seed, "kernel", t, c), at the global model `run.w0` (`kernel_penalty_grad`)."""
    if lam == 0.0:
        return None
    exp = run.exp
    x, y = exp.client_data(run.client)
    gen = torch_generator(exp.cfg.seed, "kernel", run.round, run.client)
    idx = torch.randperm(len(y), generator=gen)[:batch].to(x.device)
    return kernel_penalty_grad(batch_loss(exp.model, x[idx], y[idx]), run.w0.detach(), lam)

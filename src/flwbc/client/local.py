"""Local SGD on in-memory tensors (paper eq. 2 and, for attackers, eq. 3).

A client's work is a plan: epochs of steps, each step a list of loss terms (images, labels,
weight). A benign step has one term; a malicious step of eq. 3 has α·benign + (1−α)·malicious.
The update rule is torch's SGD with momentum (v ← μv + g, W ← W − ηv), written out on a flat
parameter vector so that a step hook (FL-WBC) sees the SGD update and the gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from flwbc.models import FlatModel


@dataclass(frozen=True)
class Term:
    """One loss term of a step: mean NLL of `model(x)` against `y`, times `weight`."""

    x: Tensor
    y: Tensor
    weight: float = 1.0


Step = list[Term]
Epoch = list[Step]


class StepHook(Protocol):
    def new_epoch(self) -> None: ...

    def __call__(self, w_hat: Tensor, step: Tensor, grad: Tensor) -> Tensor: ...


@dataclass
class LocalResult:
    weights: Tensor
    mean_loss: float
    steps: int


def epoch_batches(
    n: int, batch_size: int, epochs: int, generator: torch.Generator
) -> Iterator[list[Tensor]]:
    """Per epoch, a fresh random order of range(n) cut into batches (the last may be short),
    as a shuffling DataLoader with drop_last=False does."""
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator)
        yield list(torch.split(perm, batch_size))


def sgd_step(
    w: Tensor, velocity: Tensor, grad: Tensor, lr: float, momentum: float
) -> tuple[Tensor, Tensor]:
    """torch.optim.SGD's momentum rule (no dampening): v ← μv + g in place; returns the new
    weights w − ηv and the step −ηv."""
    velocity.mul_(momentum).add_(grad)
    step = velocity.mul(-lr)
    return w.add(step), step


def local_sgd(
    model: FlatModel,
    w0: Tensor,
    plan: Sequence[Epoch] | Iterator[Epoch],
    *,
    lr: float,
    momentum: float,
    hook: StepHook | None = None,
    extra_grad: Callable[[Tensor], Tensor] | None = None,
) -> LocalResult:
    """Run the plan from `w0` and return the final local model.

    Momentum starts at zero every round (a fresh optimiser per round, as in the reference code).
    `extra_grad(w)` is added to each step's gradient (a penalty's gradient, e.g. the
    kernel-regularised attack's).
    """
    w = w0.detach().clone()
    velocity = torch.zeros_like(w)
    loss_sum = torch.zeros((), dtype=torch.float64, device=w.device)
    steps = 0
    for epoch in plan:
        if hook is not None:
            hook.new_epoch()
        for terms in epoch:
            w.requires_grad_(True)
            loss = sum(t.weight * F.nll_loss(model(w, t.x), t.y) for t in terms if t.weight != 0.0)
            (grad,) = torch.autograd.grad(loss, w)
            if extra_grad is not None:
                grad = grad + extra_grad(w.detach())
            w_hat, step = sgd_step(w.detach(), velocity, grad, lr, momentum)
            w = hook(w_hat, step, grad) if hook is not None else w_hat
            loss_sum += loss.detach()
            steps += 1
    return LocalResult(weights=w.detach(), mean_loss=float(loss_sum) / max(steps, 1), steps=steps)


def benign_plan(
    x: Tensor, y: Tensor, batch_size: int, epochs: int, generator: torch.Generator
) -> Iterator[Epoch]:
    """Ordinary local training: `epochs` passes over (x, y) in random batches."""
    for batches in epoch_batches(len(y), batch_size, epochs, generator):
        yield [[Term(x[idx], y[idx])] for idx in batches]

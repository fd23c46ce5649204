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
    """Acts after each SGD step: gets the stepped weights Ŵ, the step −ηv and the gradient,
    returns the weights to continue from. A hook that takes an optimiser step of its own (the
    official LeadFL code's second step) also defines `bind(velocity, momentum)`, called once
    before the first step with the momentum buffer, which it then advances in place."""

    def new_epoch(self) -> None: ...

    def __call__(self, w_hat: Tensor, step: Tensor, grad: Tensor) -> Tensor: ...


class _OneRow:
    """A step hook written for one client's [P] tensors, applied to a [1, P] group."""

    def __init__(self, hook: StepHook) -> None:
        self.hook = hook

    def new_epoch(self) -> None:
        self.hook.new_epoch()

    def bind(self, velocity: Tensor, momentum: float) -> None:
        bind_velocity(self.hook, velocity[0], momentum)

    def __call__(self, w_hat: Tensor, step: Tensor, grad: Tensor) -> Tensor:
        return self.hook(w_hat[0], step[0], grad[0]).unsqueeze(0)


def bind_velocity(hook: StepHook, velocity: Tensor, momentum: float) -> None:
    """Hand the momentum buffer to a hook that takes optimiser steps of its own (if it does)."""
    bind = getattr(hook, "bind", None)
    if bind is not None:
        bind(velocity, momentum)


@dataclass
class LocalResult:
    weights: Tensor
    mean_loss: float
    steps: int


GroupLoss = Callable[[FlatModel, Tensor, list[Step]], Tensor]
"""f(model, W [G, P], one step's terms per client) -> each client's loss [G]."""


def single_loss(model: FlatModel, w: Tensor, steps: list[Step]) -> Tensor:
    """One client's loss (G = 1) through the model itself: the reference computation."""
    (terms,) = steps
    loss = sum(t.weight * F.nll_loss(model(w[0], t.x), t.y) for t in terms if t.weight != 0.0)
    return torch.zeros(1, dtype=w.dtype, device=w.device) + loss


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


def local_train(
    model: FlatModel,
    w0: Tensor,
    plans: Sequence[Iterator[Epoch]],
    *,
    lr: float,
    momentum: float,
    loss_fn: GroupLoss = single_loss,
    hook: StepHook | None = None,
    extra_grads: Sequence[Callable[[Tensor], Tensor] | None] = (),
) -> tuple[Tensor, list[float], int]:
    """Local SGD of G clients at once, in lock-step: the one training loop of every engine.

    `w0` [G, P] are the clients' starting weights and `plans` their plans, all of the same
    shape (steps, batch sizes, loss terms); `loss_fn` gives each client's step loss (G = 1
    through the model itself, the reference; the batched engine's grouped forward for G > 1).
    Momentum starts at zero (a fresh optimiser per round, as in the reference code); `hook`
    acts after each SGD step on all G rows (FL-WBC); `extra_grads[j](w_j)` is added to row
    j's gradient (a penalty's, e.g. the kernel-regularised attack's). Returns the final
    weights [G, P], each client's mean step loss and the number of steps.
    """
    g = w0.shape[0]
    weights = w0.detach().clone()
    velocity = torch.zeros_like(weights)
    if hook is not None:
        bind_velocity(hook, velocity, momentum)
    loss_sum = torch.zeros(g, dtype=torch.float64, device=weights.device)
    extras = list(extra_grads)
    steps = 0
    for epochs in zip(*plans, strict=True):
        if hook is not None:
            hook.new_epoch()
        for terms in zip(*epochs, strict=True):
            weights.requires_grad_(True)
            per_client = loss_fn(model, weights, list(terms))
            (grad,) = torch.autograd.grad(per_client.sum(), weights)
            if any(f is not None for f in extras):
                grad = grad + torch.stack(
                    [
                        f(weights[j].detach()) if f is not None else torch.zeros_like(grad[j])
                        for j, f in enumerate(extras)
                    ]
                )
            w_hat, step = sgd_step(weights.detach(), velocity, grad, lr, momentum)
            weights = hook(w_hat, step, grad) if hook is not None else w_hat
            loss_sum += per_client.detach()
            steps += 1
    return weights.detach(), (loss_sum / max(steps, 1)).tolist(), steps


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
    """One client's local SGD from flat weights `w0` [P]: `local_train` with G = 1; `hook`
    sees the client's [P] tensors."""
    w, losses, steps = local_train(
        model,
        w0.unsqueeze(0),
        [iter(plan)],
        lr=lr,
        momentum=momentum,
        hook=_OneRow(hook) if hook is not None else None,
        extra_grads=[extra_grad],
    )
    return LocalResult(weights=w[0], mean_loss=losses[0], steps=steps)


def benign_plan(
    x: Tensor, y: Tensor, batch_size: int, epochs: int, generator: torch.Generator
) -> Iterator[Epoch]:
    """Ordinary local training: `epochs` passes over (x, y) in random batches."""
    for batches in epoch_batches(len(y), batch_size, epochs, generator):
        yield [[Term(x[idx], y[idx])] for idx in batches]

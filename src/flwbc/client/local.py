"""Local SGD on in-memory tensors (paper eq. 2 and, for attackers, eq. 3).

A client's work is a plan: epochs of steps, each step a list of loss terms (images, labels,
weight). A benign step has one term; a malicious step of eq. 3 has α·benign + (1−α)·malicious.
The update rule is torch's SGD with momentum (v ← μv + g, W ← W − ηv), written out on a flat
parameter vector so that a client transform (FL-WBC) sees the SGD update and the gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from flwbc.client.mgda import mgda_scales
from flwbc.client.transform import ClientTransform, SGDStep, overrides
from flwbc.models import FlatModel


@dataclass(frozen=True)
class Term:
    """One loss term of a step: mean NLL of `model(x)` against `y`, times `weight`."""

    x: Tensor
    y: Tensor
    weight: float = 1.0


Step = list[Term]
Epoch = list[Step]


class Balanced(list[Term]):
    """A step of two loss terms whose weights are chosen at the step by MGDA
    (`flwbc.client.mgda`: the blind-backdoor attacker's balancing, normalised by the loss)
    instead of the terms' own weights, the first term's scale being γ."""


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


Chain = Sequence[tuple[ClientTransform, Any]]
"""One client's transforms in order, each with the client's state from its `init`."""

_POOLS: dict[int, ThreadPoolExecutor] = {}


def _map_rows(fn: Callable[[int], None], rows: Sequence[int], threads: bool) -> None:
    """fn(j) for every row j: with `threads` (the CPU), spread over up to
    `torch.get_num_threads()` threads (torch's CPU generators are sequential, and a transform
    drawing noise per client, such as FL-WBC, would otherwise draw one row after another)."""
    workers = min(torch.get_num_threads(), len(rows)) if threads else 1
    if workers <= 1:
        for j in rows:
            fn(j)
        return
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="flwbc-rows")

    def part(js: Sequence[int]) -> None:
        for j in js:
            fn(j)

    list(_POOLS[workers].map(part, [rows[i::workers] for i in range(workers)]))


def local_train(
    model: FlatModel,
    w0: Tensor,
    plans: Sequence[Iterator[Epoch]],
    *,
    lr: float,
    momentum: float,
    loss_fn: GroupLoss = single_loss,
    chains: Sequence[Chain] = (),
) -> tuple[Tensor, list[float], int]:
    """Local SGD of G clients at once, in lock-step: the one training loop of every engine.

    `w0` [G, P] are the clients' starting weights and `plans` their plans, all of the same
    shape (steps, batch sizes, loss terms); `loss_fn` gives each client's step loss (G = 1
    through the model itself, the reference; the batched engine's grouped forward for G > 1).
    Momentum starts at zero (a fresh optimiser per round, as in the reference code).
    `chains[j]` are row j's client transforms (`flwbc.client.transform`), each choosing the
    weights row j starts from, told of every epoch's start, adding its `grad` term at every
    step and acting after every SGD step, on row j's own tensors; a transform's `final` is the
    caller's. Returns the final weights [G, P], each client's mean step loss and the number of
    steps.
    """
    g = w0.shape[0]
    weights = w0.detach().clone()
    velocity = torch.zeros_like(weights)
    rows = list(chains) or [() for _ in range(g)]
    if len(rows) != g:
        raise ValueError(f"local_train: {len(rows)} chains for {g} rows")
    for j, row in enumerate(rows):
        for t, st in row:
            if overrides(t, "start"):
                weights[j] = t.start(st, weights[j])
    starts = [[(t, st) for t, st in c if overrides(t, "start_epoch")] for c in rows]
    grads = [[(t, st) for t, st in c if overrides(t, "grad")] for c in rows]
    afters = [[(t, st) for t, st in c if overrides(t, "after_step")] for c in rows]
    acting = [j for j in range(g) if afters[j]]
    loss_sum = torch.zeros(g, dtype=torch.float64, device=weights.device)
    steps = 0
    for epoch, epochs in enumerate(zip(*plans, strict=True)):
        for row in starts:
            for t, st in row:
                t.start_epoch(st, epoch)
        for index, terms in enumerate(zip(*epochs, strict=True)):
            weights.requires_grad_(True)
            per_client, grad = _loss_and_grad(loss_fn, model, weights, list(terms))
            if any(grads):
                extra = [_extra(row, weights[j].detach()) for j, row in enumerate(grads)]
                if any(e is not None for e in extra):
                    grad = grad + torch.stack(
                        [torch.zeros_like(grad[j]) if e is None else e for j, e in enumerate(extra)]
                    )
            w_hat, step = sgd_step(weights.detach(), velocity, grad, lr, momentum)
            if acting:
                group = SGDStep(w_hat, step, grad, velocity, lr, momentum, epoch, index)
                at = _StepAt(afters, group)
                _map_rows(at.apply, acting, threads=w_hat.device.type == "cpu")
            weights = w_hat
            loss_sum += per_client.detach()
            steps += 1
    return weights.detach(), (loss_sum / max(steps, 1)).tolist(), steps


def _loss_and_grad(
    loss_fn: GroupLoss, model: FlatModel, weights: Tensor, terms: list[Step]
) -> tuple[Tensor, Tensor]:
    """Each row's step loss [G] and its gradient [G, P] at `weights` (which require grad). A
    `Balanced` step (every row's, as rows share their steps' shape) weighs its two terms by
    MGDA: each term's loss and gradient alone, then γ·L₁ + (1 − γ)·L₂ and the same sum of the
    gradients, the scales held constant as in the official code (one backward per term)."""
    balanced = [isinstance(t, Balanced) for t in terms]
    if any(balanced) and not all(balanced):
        raise ValueError("a lock-step group mixes MGDA-balanced and plain steps")
    if not balanced[0]:
        per_client = loss_fn(model, weights, terms)
        (grad,) = torch.autograd.grad(per_client.sum(), weights)
        return per_client, grad
    losses, grads = [], []
    for k in range(len(terms[0])):
        lk = loss_fn(model, weights, [[replace(ts[k], weight=1.0)] for ts in terms])
        (gk,) = torch.autograd.grad(lk.sum(), weights)
        losses.append(lk.detach())
        grads.append(gk)
    loss, grad = torch.stack(losses), torch.stack(grads)
    scales = mgda_scales(grad, loss)
    return (scales * loss).sum(0), (scales.unsqueeze(-1) * grad).sum(0)


@dataclass(frozen=True)
class _StepAt:
    """One lock-step SGD step of G rows (`group`, its tensors [G, P]), handed to each row's
    transforms on its own row."""

    afters: list[list[tuple[ClientTransform, Any]]]
    group: SGDStep

    def apply(self, j: int) -> None:
        """Row j's transforms after the step, in order; their weights written back to row j."""
        g = self.group
        w = g.w_hat[j]
        for t, st in self.afters[j]:
            mine = SGDStep(
                w, g.step[j], g.grad[j], g.velocity[j], g.lr, g.momentum, g.epoch, g.index
            )
            w = t.after_step(st, mine)
        if w.data_ptr() != g.w_hat[j].data_ptr():
            g.w_hat[j] = w


def _extra(row: Chain, w: Tensor) -> Tensor | None:
    """The sum, in order, of a client's transforms' gradient terms at w (None: none)."""
    total = None
    for t, st in row:
        term = t.grad(st, w)
        if term is not None:
            total = term if total is None else total + term
    return total


def local_sgd(
    model: FlatModel,
    w0: Tensor,
    plan: Sequence[Epoch] | Iterator[Epoch],
    *,
    lr: float,
    momentum: float,
    chain: Chain = (),
) -> LocalResult:
    """One client's local SGD from flat weights `w0` [P]: `local_train` with G = 1."""
    w, losses, steps = local_train(
        model, w0.unsqueeze(0), [iter(plan)], lr=lr, momentum=momentum, chains=[chain]
    )
    return LocalResult(weights=w[0], mean_loss=losses[0], steps=steps)


def benign_plan(
    x: Tensor, y: Tensor, batch_size: int, epochs: int, generator: torch.Generator
) -> Iterator[Epoch]:
    """Ordinary local training: `epochs` passes over (x, y) in random batches."""
    for batches in epoch_batches(len(y), batch_size, epochs, generator):
        yield [[Term(x[idx], y[idx])] for idx in batches]

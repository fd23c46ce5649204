"""The batched engine: a round's clients with the same schedule train in lock-step.

Clients whose plans have the same shape (same number of steps, same batch sizes: benign clients
with equally many samples, or the attackers) form a group. The group's parameters are one
`[G, P]` matrix; each step gathers every client's own batch, runs one forward and backward pass
for all of them, and applies SGD with momentum and FL-WBC to the whole matrix. Every client keeps
its own random streams (data order, FL-WBC noise, local DP), so the result equals the sequential
engine's up to float rounding.

The forward pass of the built-in models is written out for G clients at once: convolutions as
grouped convolutions in channels-last layout, linear layers as batched matrix products. Other
models fall back to `torch.func.vmap`, which is correct but slower.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from flwbc.client.local import Epoch
from flwbc.context import RoundPlan
from flwbc.engine.registry import Engine, RoundItem, register_engine
from flwbc.experiment import Experiment
from flwbc.models import CIFARCNN, FMNISTCNN, MLP, FlatModel
from flwbc.round import (
    ClientJob,
    ClientStats,
    RoundOutput,
    RoundUpdates,
    aggregate_round,
    job_plan,
    train_jobs,
)

BatchedForward = Callable[[FlatModel, Tensor, Tensor], Tensor]
"""f(model, W [G, P], x [G, B, ...]) -> log-probabilities [G, B, classes]."""

BATCHED_FORWARDS: dict[type, BatchedForward] = {}

MAX_GROUP = 10
"""Rows trained in one lock-step group at most. Measured on 2 cores: a 10-run sweep (100 rows a
round) as one group ran at 0.69x (CIFAR-10) and 0.88x (Fashion-MNIST) the speed of the runs
one after another, since [100, P] temporaries leave the cache; groups of 10-40 ran at 0.9-1.04x."""


def register_batched_forward(cls: type) -> Callable[[BatchedForward], BatchedForward]:
    def deco(fn: BatchedForward) -> BatchedForward:
        BATCHED_FORWARDS[cls] = fn
        return fn

    return deco


def _params(model: FlatModel, w: Tensor) -> list[Tensor]:
    g = w.shape[0]
    return [
        t.reshape(g, *s)
        for t, s in zip(torch.split(w, model.numels, dim=1), model.shapes, strict=True)
    ]


def _grouped_conv(x: Tensor, weight: Tensor, bias: Tensor, padding: int) -> Tensor:
    """x [B, G*Cin, H, W]; weight [G, Cout, Cin, k, k]; bias [G, Cout] -> [B, G*Cout, H', W']."""
    g, cout = weight.shape[:2]
    w = weight.reshape(g * cout, *weight.shape[2:]).contiguous(memory_format=torch.channels_last)
    return F.conv2d(x, w, bias.reshape(-1), padding=padding, groups=g)


def _stack_images(x: Tensor) -> Tensor:
    """[G, B, C, H, W] -> [B, G*C, H, W] in channels-last layout."""
    g, b, c, h, w = x.shape
    return x.transpose(0, 1).reshape(b, g * c, h, w).contiguous(memory_format=torch.channels_last)


def _unstack_features(h: Tensor, g: int) -> Tensor:
    """[B, G*C, H, W] -> [G, B, C*H*W], flattened per client in (C, H, W) order."""
    b = h.shape[0]
    return h.reshape(b, g, -1).transpose(0, 1)


def _linear(h: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """h [G, B, in]; weight [G, out, in]; bias [G, out] -> [G, B, out]."""
    return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))


@register_batched_forward(FMNISTCNN)
def _fmnist_cnn(model: FlatModel, w: Tensor, x: Tensor) -> Tensor:
    w1, b1, w2, b2, wf, bf = _params(model, w)
    g = w.shape[0]
    h = F.max_pool2d(F.relu(_grouped_conv(_stack_images(x), w1, b1, 2)), 2)
    h = F.max_pool2d(F.relu(_grouped_conv(h, w2, b2, 2)), 2)
    return F.log_softmax(_linear(_unstack_features(h, g), wf, bf), dim=-1)


@register_batched_forward(CIFARCNN)
def _cifar_cnn(model: FlatModel, w: Tensor, x: Tensor) -> Tensor:
    w1, b1, w2, b2, w3, b3, w4, b4, w5, b5 = _params(model, w)
    g = w.shape[0]
    h = F.max_pool2d(F.relu(_grouped_conv(_stack_images(x), w1, b1, 0)), 2)
    h = F.max_pool2d(F.relu(_grouped_conv(h, w2, b2, 0)), 2)
    h = F.relu(_linear(_unstack_features(h, g), w3, b3))
    h = F.relu(_linear(h, w4, b4))
    return F.log_softmax(_linear(h, w5, b5), dim=-1)


@register_batched_forward(MLP)
def _mlp(model: FlatModel, w: Tensor, x: Tensor) -> Tensor:
    w1, b1, w2, b2 = _params(model, w)
    h = F.relu(_linear(x.flatten(2), w1, b1))
    return F.log_softmax(_linear(h, w2, b2), dim=-1)


def _vmap_forward(model: FlatModel, w: Tensor, x: Tensor) -> Tensor:
    return torch.func.vmap(partial(model, channels_last=False))(w, x)


def batched_forward(model: FlatModel) -> BatchedForward:
    return BATCHED_FORWARDS.get(type(model.module), _vmap_forward)


def grouped_loss(forward: BatchedForward) -> Callable[[FlatModel, Tensor, list[Any]], Tensor]:
    """Each of G clients' step loss through one batched forward per loss term."""

    def loss(model: FlatModel, weights: Tensor, terms: list[Any]) -> Tensor:
        g = weights.shape[0]
        per_client = torch.zeros(g, dtype=weights.dtype, device=weights.device)
        for k in range(len(terms[0])):
            tw = terms[0][k].weight
            if tw == 0.0:
                continue
            x = torch.stack([ts[k].x for ts in terms])
            y = torch.stack([ts[k].y for ts in terms])
            logp = forward(model, weights, x)
            nll = F.nll_loss(logp.flatten(0, 1), y.flatten(), reduction="none")
            per_client = per_client + tw * nll.view(g, -1).mean(1)
        return per_client

    return loss


def train_jobs_batched(
    jobs: list[ClientJob], max_group: int = MAX_GROUP
) -> list[tuple[Tensor, float, ClientStats]]:
    """(update, mean loss, stats) for every job, training jobs of equal key together, at most
    `max_group` at a time."""
    groups: dict[Hashable, list[int]] = {}
    plans: list[Iterator[Epoch]] = []
    for i, job in enumerate(jobs):
        key, plan = job_plan(job)
        plans.append(plan)
        groups.setdefault(key, []).append(i)
    out: list[tuple[Tensor, float, ClientStats]] = [None] * len(jobs)  # type: ignore[list-item]
    chunks = [
        members[k : k + max_group]
        for members in groups.values()
        for k in range(0, len(members), max_group)
    ]
    for members in chunks:
        model = jobs[members[0]].exp.model
        results = train_jobs(
            [jobs[i] for i in members],
            [plans[i] for i in members],
            grouped_loss(batched_forward(model)),
        )
        for i, res in zip(members, results, strict=True):
            out[i] = res
    return out


def train_rounds(items: list[RoundItem]) -> list[RoundOutput]:
    """One round of several runs at once: all their clients train together where they can,
    then each run aggregates its own updates. Each run's result equals running it alone."""
    results = train_jobs_batched([job for item in items for job in _jobs(*item)])
    outs, pos = [], 0
    for exp, plan, w in items:
        u = RoundUpdates.of(results[pos : pos + len(plan.clients)])
        pos += len(plan.clients)
        outs.append(aggregate_round(exp, plan, w, u.updates, u.mean_loss, u.stats))
    return outs


def round_updates(exp: Experiment, plan: RoundPlan, w: Tensor) -> RoundUpdates:
    """Every participant of the round trains from `w`, those of the same schedule together."""
    return RoundUpdates.of(train_jobs_batched(_jobs(exp, plan, w)))


def _jobs(exp: Experiment, plan: RoundPlan, w: Tensor) -> list[ClientJob]:
    pairs = zip(plan.clients, plan.malicious, strict=True)
    return [ClientJob(exp, plan.round, c, m, w) for c, m in pairs]


def train_round(exp: Experiment, plan: RoundPlan, w: Tensor) -> RoundOutput:
    """One FedAvg round with clients of the same schedule trained together."""
    return train_rounds([(exp, plan, w)])[0]


ENGINE = register_engine(
    Engine(
        "batched",
        "clients with the same schedule train in lock-step, also across runs (fast); equal to "
        "sequential up to float rounding",
        train_rounds=train_rounds,
        round_updates=round_updates,
    )
)

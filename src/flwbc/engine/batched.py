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

from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from flwbc.client.attack import malicious_plan
from flwbc.client.local import Epoch, benign_plan
from flwbc.client.wbc import laplace_noise, laplace_scale, wbc_perturb
from flwbc.engine.sequential import RoundOutput, aggregate_round, finish_update
from flwbc.experiment import Experiment, RoundPlan
from flwbc.models import CIFARCNN, FMNISTCNN, MLP, FlatModel
from flwbc.rng import torch_generator

BatchedForward = Callable[[FlatModel, Tensor, Tensor], Tensor]
"""f(model, W [G, P], x [G, B, ...]) -> log-probabilities [G, B, classes]."""

BATCHED_FORWARDS: dict[type, BatchedForward] = {}


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
    return F.conv2d(
        x, weight.reshape(g * cout, *weight.shape[2:]), bias.reshape(-1), padding=padding, groups=g
    )


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
    return torch.func.vmap(model)(w, x)


def batched_forward(model: FlatModel) -> BatchedForward:
    return BATCHED_FORWARDS.get(type(model.module), _vmap_forward)


def train_group(
    exp: Experiment, t: int, clients: list[int], plans: list[Iterator[Epoch]], w: Tensor, wbc: bool
) -> tuple[Tensor, list[float], list[float]]:
    """Train clients whose plans have the same shape together, advancing the plans in lock-step;
    return their final weights [G, P], mean losses and (with FL-WBC) perturbed shares."""
    cfg, loc = exp.cfg, exp.cfg.local
    forward = batched_forward(exp.model)
    g = len(clients)
    weights = w.detach().unsqueeze(0).repeat(g, 1)
    velocity = torch.zeros_like(weights)
    loss_sum = torch.zeros(g, dtype=torch.float64, device=w.device)
    steps = 0
    wbc_cfg = cfg.defense.wbc
    scale = laplace_scale(wbc_cfg.s, wbc_cfg.noise) if wbc else 0.0
    allowed = exp.model.weight_mask if wbc_cfg.params == "weights" else None
    gens = (
        [torch_generator(cfg.seed, "wbc", t, c, device=exp.device) for c in clients] if wbc else []
    )
    prev: Tensor | None = None
    perturbed = torch.zeros(g, dtype=torch.float64, device=w.device)
    perturbed_steps = 0
    for epochs in zip(*plans, strict=True):
        if wbc and wbc_cfg.reset_each_epoch:
            prev = None
        for terms in zip(*epochs, strict=True):
            weights.requires_grad_(True)
            per_client = torch.zeros(g, dtype=weights.dtype, device=w.device)
            for k in range(len(terms[0])):
                tw = terms[0][k].weight
                if tw == 0.0:
                    continue
                x = torch.stack([ts[k].x for ts in terms])
                y = torch.stack([ts[k].y for ts in terms])
                logp = forward(exp.model, weights, x)
                nll = F.nll_loss(logp.flatten(0, 1), y.flatten(), reduction="none")
                per_client = per_client + tw * nll.view(g, -1).mean(1)
            (grad,) = torch.autograd.grad(per_client.sum(), weights)
            weights = weights.detach()
            velocity.mul_(loc.momentum).add_(grad)
            step = velocity.mul(-loc.lr)
            w_hat = weights.add(step)
            if wbc:
                proxy = step if wbc_cfg.hessian == "update" else grad
                if prev is not None and scale != 0.0:
                    diff = (proxy - prev).abs_()
                    if wbc_cfg.hessian == "update":
                        diff.div_(loc.lr)
                    noise = torch.stack(
                        [laplace_noise((w.numel(),), scale, gen, w.device) for gen in gens]
                    ).to(w.dtype)
                    w_hat, mask = wbc_perturb(w_hat, diff, noise, loc.lr, allowed)
                    perturbed += mask.sum(1)
                    perturbed_steps += 1
                prev = proxy
            weights = w_hat
            loss_sum += per_client.detach()
            steps += 1
    shares = (
        (perturbed / (perturbed_steps * w.numel())).tolist()
        if wbc and perturbed_steps
        else ([0.0] * g if wbc else [])
    )
    return weights, (loss_sum / max(steps, 1)).tolist(), shares


def _plan(exp: Experiment, t: int, c: int, malicious: bool) -> tuple[Any, Iterator[Epoch]]:
    """Client c's plan for round t, and a key equal for plans of the same shape."""
    cfg, loc = exp.cfg, exp.cfg.local
    gen = torch_generator(cfg.seed, "data", t, c)
    if malicious:
        att = cfg.attack
        x, y = exp.client_data(c) if att.alpha > 0 else (torch.empty(0), torch.empty(0))
        plan = malicious_plan(
            x,
            y,
            exp.x_mal,
            exp.y_mal,
            alpha=att.alpha,
            batch_size=loc.batch_size,
            epochs=att.epochs,
            generator=gen,
        )
        return (True, len(y)), plan
    x, y = exp.client_data(c)
    return (False, len(y)), benign_plan(x, y, loc.batch_size, loc.epochs, gen)


def train_round(exp: Experiment, plan: RoundPlan, w: Tensor) -> RoundOutput:
    """One FedAvg round with clients of the same schedule trained together."""
    cfg = exp.cfg
    wbc_on = cfg.defense.client == "wbc"
    plans: dict[int, Iterator[Epoch]] = {}
    groups: dict[Any, list[int]] = {}
    for c, m in zip(plan.clients, plan.malicious, strict=True):
        key, plans[c] = _plan(exp, plan.round, c, m)
        groups.setdefault(key, []).append(c)
    updates: dict[int, Tensor] = {}
    losses: dict[int, float] = {}
    shares: list[float] = []
    for (malicious, _), members in groups.items():
        wbc = wbc_on and not malicious
        final, group_losses, group_shares = train_group(
            exp, plan.round, members, [plans[c] for c in members], w, wbc
        )
        shares += group_shares
        for i, c in enumerate(members):
            updates[c] = finish_update(exp, plan.round, c, malicious, final[i] - w)
            losses[c] = group_losses[i]
    stacked = torch.stack([updates[c] for c in plan.clients])
    mean_loss = sum(losses[c] for c in plan.clients) / len(plan.clients)
    return aggregate_round(exp, plan, w, stacked, mean_loss, shares)

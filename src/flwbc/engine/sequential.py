"""The reference engine: trains a round's clients one after another."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from flwbc.analysis.hessian import batch_loss
from flwbc.client.attack import kernel_penalty_grad, malicious_plan
from flwbc.client.local import Epoch, benign_plan, local_sgd
from flwbc.client.wbc import WBCStep
from flwbc.engine.registry import Engine, RoundItem, register_engine
from flwbc.experiment import Experiment, RoundPlan
from flwbc.rng import torch_generator
from flwbc.server import RoundContext
from flwbc.transforms import clip_by_norm, noise


@dataclass
class RoundOutput:
    weights: Tensor
    train_loss: float
    info: dict[str, Any] = field(default_factory=dict)


def client_plan(exp: Experiment, t: int, c: int, malicious: bool) -> tuple[int, Iterator[Epoch]]:
    """Client c's local-training plan for round t, and its number of own training samples.

    Data order comes from the stream (seed, "data", t, c), so it depends neither on other
    clients nor on the defense chosen. Attackers train on D_M (eq. 3), on their own data too
    when α > 0.
    """
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
        return len(y), plan
    x, y = exp.client_data(c)
    return len(y), benign_plan(x, y, loc.batch_size, loc.epochs, gen)


def client_update(
    exp: Experiment, t: int, c: int, malicious: bool, w: Tensor, *, local_dp: bool = True
) -> tuple[Tensor, float, float | None]:
    """Train client c in round t from global weights w; return (update, mean loss, WBC share).

    FL-WBC noise comes from the stream (seed, "wbc", t, c). `local_dp=False` leaves local DP
    to the caller (the Flower mod applies `apply_local_dp` to the finished update).
    """
    cfg, loc = exp.cfg, exp.cfg.local
    _, plan = client_plan(exp, t, c, malicious)
    hook = None
    if not malicious and cfg.defense.client == "wbc":
        hook = WBCStep(
            cfg.defense.wbc,
            loc.lr,
            exp.model.weight_mask,
            torch_generator(cfg.seed, "wbc", t, c, device=exp.device),
        )
    extra = kernel_penalty(exp, t, c, w) if malicious else None
    res = local_sgd(
        exp.model, w, plan, lr=loc.lr, momentum=loc.momentum, hook=hook, extra_grad=extra
    )
    update = finish_update(exp, t, c, malicious, res.weights - w, local_dp=local_dp)
    return update, res.mean_loss, (hook.perturbed_fraction() if hook is not None else None)


def kernel_penalty(exp: Experiment, t: int, c: int, w: Tensor) -> Callable[[Tensor], Tensor] | None:
    """Attacker c's kernel-regularisation gradient for round t (None when the attack has none):
    H is taken at the global model w on `kernel_batch` of its own images, drawn from the stream
    (seed, "kernel", t, c)."""
    att = exp.cfg.attack
    if att.kernel_reg == 0.0:
        return None
    x, y = exp.client_data(c)
    gen = torch_generator(exp.cfg.seed, "kernel", t, c)
    idx = torch.randperm(len(y), generator=gen)[: att.kernel_batch].to(x.device)
    loss = batch_loss(exp.model, x[idx], y[idx])
    return kernel_penalty_grad(loss, w.detach(), att.kernel_reg)


def finish_update(
    exp: Experiment, t: int, c: int, malicious: bool, update: Tensor, *, local_dp: bool = True
) -> Tensor:
    """What client c sends: attackers may boost their update (explicit boosting), benign
    clients under local DP clip it and add noise (`apply_local_dp`)."""
    cfg = exp.cfg
    if malicious and cfg.attack.mode == "boost":
        update = update * cfg.attack.boost
    if local_dp and not malicious and cfg.defense.client == "ldp":
        update = apply_local_dp(exp, t, c, update)
    return update


def apply_local_dp(exp: Experiment, t: int, c: int, update: Tensor) -> Tensor:
    """Local DP (paper §7.1): clip client c's round-t update to L2 norm C, then add noise of
    std σ_dp from the stream (seed, "ldp", t, c)."""
    ldp = exp.cfg.defense.ldp
    update = clip_by_norm(update, ldp.clip)[0]
    update += noise(
        tuple(update.shape),
        ldp.noise,
        ldp.sigma,
        torch_generator(exp.cfg.seed, "ldp", t, c, device=exp.device),
        exp.device,
    )
    return update


def aggregate_round(
    exp: Experiment,
    plan: RoundPlan,
    w: Tensor,
    updates: Tensor,
    mean_loss: float,
    wbc_shares: list[float],
) -> RoundOutput:
    """Apply the aggregator to the round's updates [K, P] (rows in `plan.clients` order)."""
    ctx = RoundContext(
        round=plan.round,
        client_ids=plan.clients,
        generator=torch_generator(exp.cfg.seed, "server", plan.round, device=exp.device),
        global_weights=w,
        reference_update=(lambda: exp.reference_update(plan.round, w))
        if exp.root_indices is not None
        else None,
    )
    agg = exp.aggregator.aggregate(updates, plan.weights.to(w.device), ctx)
    info: dict[str, Any] = {}
    if agg.info:
        info["aggregator"] = agg.info
    if wbc_shares:
        info["wbc_perturbed"] = sum(wbc_shares) / len(wbc_shares)
    return RoundOutput(w + agg.update, mean_loss, info)


@dataclass
class RoundUpdates:
    """A round's client updates [K, P] (rows in `plan.clients` order) before aggregation, the
    mean local training loss and the FL-WBC clients' perturbed shares."""

    updates: Tensor
    mean_loss: float
    wbc_shares: list[float]

    @classmethod
    def of(cls, results: list[tuple[Tensor, float, float | None]]) -> RoundUpdates:
        """From per-client (update, loss, FL-WBC share) in `plan.clients` order."""
        return cls(
            torch.stack([u for u, _, _ in results]),
            sum(loss for _, loss, _ in results) / len(results),
            [s for _, _, s in results if s is not None],
        )


def round_updates(exp: Experiment, plan: RoundPlan, w: Tensor) -> RoundUpdates:
    """Every participant of the round trains from `w`, one after another."""
    return RoundUpdates.of(
        [
            client_update(exp, plan.round, c, mal, w)
            for c, mal in zip(plan.clients, plan.malicious, strict=True)
        ]
    )


def train_round(exp: Experiment, plan: RoundPlan, w: Tensor) -> RoundOutput:
    """One FedAvg round: every participant trains, the aggregator combines their updates."""
    u = round_updates(exp, plan, w)
    return aggregate_round(exp, plan, w, u.updates, u.mean_loss, u.wbc_shares)


def train_rounds(items: list[RoundItem]) -> list[RoundOutput]:
    """One round of each run, one run after another."""
    return [train_round(exp, plan, w) for exp, plan, w in items]


ENGINE = register_engine(
    Engine(
        "sequential",
        "clients one after another: the reference",
        train_rounds=train_rounds,
        round_updates=round_updates,
    )
)

"""The attack effect on parameters (AEP, paper §4.2-4.3), measured on any run.

The run is replayed together with its *counterfactual*: the same run in which the attackers
behave as benign clients (they train their own data on the benign schedule, with the benign
clients' defense), with identical client sampling, data order and noise, since every random
stream is keyed by (seed, round, client). Then δ_t = W_t(S \\ M) − W_t is exactly the
attack's footprint: zero before the first adversarial round, and the counterfactual of a run
without attacks is the run itself, bit for bit.

Per round it records:
- ‖δ_t‖ and ‖δ_t − δ_{t−1}‖;
- F_M(W_t(S\\M) − δ_t) − F_M(W_t(S\\M)) = F_M(W_t) − F_M(W_t(S\\M)), F_M being the malicious
  loss (mean NLL of D_M's target labels): how much the AEP still serves the attacker;
- the estimator of eq. 7 from the first adversarial round t_a on: δ̂_{t_a} = δ_{t_a} and
  δ̂_t = Σ_k p_k · Π_i (I − η H^k_{t,i}) δ̂_{t−1}, the product taken along client k's local
  steps on its actual batches with Hessian-vector products. With momentum μ the factor is the
  exact linearisation of momentum SGD (δv ← μ δv + H δw, δw ← δw − η δv), which is eq. 7's
  product when μ = 0. The replayed trajectories leave out FL-WBC's and DP's noise, as eq. 7
  does; its relative error ‖δ̂_t − δ_t‖ / ‖δ_t‖ says how well it tracks;
- Hessian evidence for up to `hessian_clients` benign clients of the round, on their local
  data at the new global model: ‖H δ_t‖ / (‖H‖₂ ‖δ_t‖) (0 when δ lies in H's kernel, 1 when
  along its top eigenvector), the same for a random Gaussian direction as a baseline, and
  the fraction of Hessian-diagonal entries that are near zero (Hutchinson's estimate;
  |h_jj| ≤ τ · max|h|) or exactly zero.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from flwbc.analysis.replay import replay_start
from flwbc.config import ExperimentConfig, load_run_config
from flwbc.context import RoundPlan
from flwbc.curvature import batch_loss, grad_and_hvp, hutchinson_diag, spectral_norm
from flwbc.engine import replay_engine
from flwbc.errors import FlwbcError
from flwbc.experiment import Experiment
from flwbc.rng import torch_generator
from flwbc.round import client_plan
from flwbc.runio import JsonlLog, atomic_write_json
from flwbc.server import build_aggregator

NEAR_ZERO = (1e-4, 1e-3, 1e-2)


@dataclass
class AEPOptions:
    rounds: int | None = None
    """Analyse the first `rounds` rounds (default: all the run's rounds)."""
    estimator_rounds: int = 10
    """Rounds after the first attack over which eq. 7 is propagated (0: no estimator)."""
    hessian_clients: int = 2
    """Benign clients per round whose Hessian is examined (0: none)."""
    hutchinson_samples: int = 32


def counterfactual(plan: RoundPlan) -> RoundPlan:
    """The same round with every participant benign."""
    return dataclasses.replace(plan, malicious=[False] * len(plan.clients))


def malicious_loss(exp: Experiment, w: Tensor) -> float:
    """F_M: the mean NLL of D_M's target labels (the attacker's objective, eq. 3 with α = 0)."""
    assert exp.x_mal is not None and exp.y_mal is not None
    with torch.inference_mode():
        return float(F.nll_loss(exp.model(w, exp.x_mal), exp.y_mal))


def propagate(exp: Experiment, plan: RoundPlan, w: Tensor, delta: Tensor) -> Tensor:
    """Eq. 7 for one round: push δ̂ through every participant's local steps (replayed from the
    global model `w` on its actual batches) and average with the round's weights."""
    loc = exp.cfg.local
    out = torch.zeros_like(delta)
    for c, p in zip(plan.clients, plan.weights.tolist(), strict=True):
        _, steps = client_plan(exp, plan.round, c, False)
        x, v = w.detach().clone(), torch.zeros_like(w)
        dx, dv = delta.detach().clone(), torch.zeros_like(w)
        for epoch in steps:
            for terms in epoch:
                loss = _step_loss(exp, terms)
                g, hdx = grad_and_hvp(loss, x, dx)
                dv.mul_(loc.momentum).add_(hdx)
                dx.sub_(dv, alpha=loc.lr)
                v.mul_(loc.momentum).add_(g)
                x.sub_(v, alpha=loc.lr)
        out += p * dx
    return out


def _step_loss(exp: Experiment, terms: list[Any]) -> Callable[[Tensor], Tensor]:
    def loss(w: Tensor) -> Tensor:
        return sum(t.weight * F.nll_loss(exp.model(w, t.x), t.y) for t in terms)  # type: ignore[return-value]

    return loss


def hessian_evidence(
    exp: Experiment, plan: RoundPlan, w: Tensor, delta: Tensor, opts: AEPOptions
) -> dict[str, Any]:
    """‖Hδ‖/(‖H‖‖δ‖) and near-zero diagonal fractions for the round's first benign clients."""
    clients = [c for c, m in zip(plan.clients, plan.malicious, strict=True) if not m]
    clients = clients[: opts.hessian_clients]
    ratios, random_ratios, zeros, exact = [], [], {tau: [] for tau in NEAR_ZERO}, []
    dnorm = float(delta.norm())
    for c in clients:
        x, y = exp.client_data(c)
        loss = batch_loss(exp.model, x, y)
        gen = torch_generator(exp.cfg.seed, "analysis-hessian", plan.round, c, device=exp.device)
        h_norm = spectral_norm(loss, w, gen)
        _, h_delta = grad_and_hvp(loss, w, delta)
        if dnorm > 0 and h_norm > 0:
            ratios.append(float(h_delta.norm()) / (h_norm * dnorm))
            r = torch.randn(w.shape, generator=gen, device=w.device, dtype=w.dtype)
            _, h_r = grad_and_hvp(loss, w, r)
            random_ratios.append(float(h_r.norm()) / (h_norm * float(r.norm())))
        diag = hutchinson_diag(loss, w, opts.hutchinson_samples, gen).abs()
        top = float(diag.max())
        for tau in NEAR_ZERO:
            zeros[tau].append(float((diag <= tau * top).double().mean()))
        exact.append(float((diag == 0).double().mean()))
    return {
        "hessian_clients": clients,
        "h_delta_ratio": statistics.fmean(ratios) if ratios else None,
        "h_random_ratio": statistics.fmean(random_ratios) if random_ratios else None,
        "hdiag_near_zero": {f"{tau:g}": statistics.fmean(v) for tau, v in zeros.items() if v},
        "hdiag_exact_zero": statistics.fmean(exact) if exact else None,
    }


def analyze(
    cfg: ExperimentConfig,
    opts: AEPOptions | None = None,
    *,
    log: JsonlLog | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Replay the run of `cfg` (from its `init_model`, as the run did) with its counterfactual
    and return one record per round (see the module docstring)."""
    opts = opts or AEPOptions()
    exp, w = replay_start(cfg)
    if exp.x_mal is None:
        raise FlwbcError("this run has no attack (attack.enabled is false): there is no AEP")
    exp_cf = dataclasses.replace(
        exp, aggregator=build_aggregator(cfg.server.aggregator, cfg.server.options)
    )
    train_round = replay_engine(cfg.engine).train_round
    w_cf = w.clone()
    delta_prev = torch.zeros_like(w)
    delta_hat: Tensor | None = None
    first_attack: int | None = None
    rounds = opts.rounds or cfg.federation.rounds
    records = []
    for t in tqdm(range(1, rounds + 1), disable=not progress, desc="AEP", unit="round"):
        plan = exp.round_plan(t)
        w_start = w
        w = train_round(exp, plan, w).weights
        w_cf = train_round(exp_cf, counterfactual(plan), w_cf).weights
        delta = w_cf - w
        fm, fm_cf = malicious_loss(exp, w), malicious_loss(exp, w_cf)
        rec: dict[str, Any] = {
            "round": t,
            "adversarial": plan.adversarial,
            "delta_norm": float(delta.norm()),
            "delta_change": float((delta - delta_prev).norm()),
            "fm_gap": fm - fm_cf,
            "fm": fm,
            "fm_counterfactual": fm_cf,
        }
        if plan.adversarial and first_attack is None:
            first_attack = t
            delta_hat = delta.clone()
        elif delta_hat is not None and first_attack is not None:
            if plan.adversarial or t > first_attack + opts.estimator_rounds:
                delta_hat = None
            else:
                delta_hat = propagate(exp, plan, w_start, delta_hat)
                dn = float(delta.norm())
                rec["estimate_norm"] = float(delta_hat.norm())
                rec["estimate_rel_error"] = float((delta_hat - delta).norm()) / dn if dn else None
                rec["estimate_cosine"] = (
                    float(F.cosine_similarity(delta_hat, delta, dim=0)) if dn else None
                )
        if opts.hessian_clients > 0 and first_attack is not None and rec["delta_norm"] > 0:
            rec.update(hessian_evidence(exp, plan, w, delta, opts))
        records.append(rec)
        if log is not None:
            log.write(rec)
        delta_prev = delta
    return records


def analyze_run(
    run_dir: str | Path, opts: AEPOptions | None = None, *, progress: bool = True
) -> Path:
    """Analyse a run directory: write `analysis.jsonl` (a record per round, flushed as it
    goes), `analysis.json` (options and a summary) and `analysis.png|svg` into it."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    opts = opts or AEPOptions()
    path = run_dir / "analysis.jsonl"
    path.unlink(missing_ok=True)
    log = JsonlLog(path)
    try:
        records = analyze(cfg, opts, log=log, progress=progress)
    finally:
        log.close()
    atomic_write_json(
        run_dir / "analysis.json",
        {"options": dataclasses.asdict(opts), "summary": summarize(records)},
    )
    from flwbc.plots import plot_aep

    plot_aep({run_dir.name: records}, run_dir / "analysis")
    return path


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Headline numbers: ‖δ‖ at the first attack and how far it decays, eq. 7's error, and
    the Hessian evidence averaged over the rounds that have it."""
    adv = [r for r in records if r["adversarial"]]
    out: dict[str, Any] = {"first_attack": adv[0]["round"] if adv else None}
    if adv:
        start = records.index(adv[0])
        window = records[start:]
        out["delta_norm_at_attack"] = window[0]["delta_norm"]
        out["delta_norm_last"] = window[-1]["delta_norm"]
        out["delta_norm_before_attack_max"] = max(
            (r["delta_norm"] for r in records[:start]), default=0.0
        )
    errs = [r["estimate_rel_error"] for r in records if r.get("estimate_rel_error") is not None]
    if errs:
        out["estimate_rel_error_median"] = statistics.median(errs)
        out["estimate_rel_error_max"] = max(errs)
    for key in ("h_delta_ratio", "h_random_ratio"):
        vals = [r[key] for r in records if r.get(key) is not None]
        if vals:
            out[f"{key}_median"] = statistics.median(vals)
    for key in ("hdiag_exact_zero",):
        vals = [r[key] for r in records if r.get(key) is not None]
        if vals:
            out[f"{key}_mean"] = statistics.fmean(vals)
    near = [r["hdiag_near_zero"] for r in records if r.get("hdiag_near_zero")]
    if near:
        out["hdiag_near_zero_mean"] = {k: statistics.fmean(n[k] for n in near) for k in near[0]}
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}

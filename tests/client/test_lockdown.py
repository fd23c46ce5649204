"""The Lockdown client defense (`flwbc.defenses.lockdown`) against a reference written the way
the official client trains (git-disl/Lockdown at 147ec87, `agent_sparse.py:105-167`): mask the
received weights, SGD on the masked gradient, prune, send mask ⊙ (trained − global), and from the
second training on regrow first, from the gradient summed over one pass of the client's data.
The mask arithmetic itself is checked against the authors' functions in test_lockdown_masks.py.
Also: a resumed run keeps every client's mask, and consensus fusion's votes equal
`lockdown_masks.consensus` over every benign client's mask."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from flwbc.api import run
from flwbc.config import make_config
from flwbc.defenses.lockdown import Lockdown
from flwbc.defenses.lockdown_masks import (
    consensus,
    erk_densities,
    init_masks,
    prune,
    prune_rate,
    regrow,
)
from flwbc.evaluation.lockdown_cf import consensus_votes
from flwbc.experiment import Experiment
from flwbc.rng import torch_generator
from flwbc.round import client_plan, client_update

ROUNDS = 3


def _cfg(data: Path, out: Path | None = None, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "data": {"name": "fmnist", "train_fraction": 0.02, "dir": str(data)},
        "federation": {"num_clients": 5, "clients_per_round": 3, "rounds": ROUNDS},
        "local": {"epochs": 1, "batch_size": 32, "momentum": 0.0},
        "attack": {"enabled": False},
        "defense": {
            "client": "lockdown",
            "options": {"lockdown": {"anneal": 0.3, "screen_batch": 16}},
        },
        "threads": 1,
        **extra,
    }
    if out is not None:
        cfg["output"] = {"dir": str(out.parent), "name": out.name}
    return cfg


def _flat_masks(exp: Experiment, masks: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([masks[n].reshape(-1) for n in exp.model.names])


def _reference_round(
    exp: Experiment, t: int, c: int, w_global: torch.Tensor, mask: torch.Tensor, removed: Any
) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
    """The official client's round, written out: (update sent, mask after pruning, counts)."""
    model, lr = exp.model, exp.cfg.local.lr
    received = mask  # the weights are masked before recovery: regrown coordinates start at 0
    if removed is not None:  # recovery: gradients accumulated over one pass, never zeroed
        x, y = exp.client_data(c)
        order = torch.randperm(len(y), generator=torch_generator(exp.cfg.seed, "lockdown", t, c))
        w = (w_global * mask).requires_grad_(True)
        for s in range(0, len(y) // 16 * 16, 16):
            idx = order[s : s + 16]
            F.nll_loss(model(w, x[idx]), y[idx]).backward()
        named = model.unflatten
        mask = _flat_masks(exp, regrow(named(mask), removed, named(w.grad.detach())))
    w = (w_global * received).clone()
    _, plan = client_plan(exp, t, c, False)
    for epoch in plan:
        for (term,) in epoch:
            wg = w.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(F.nll_loss(model(wg, term.x), term.y), wg)
            w = w - lr * (g * mask)
    rate = prune_rate(t, ROUNDS, 0.3)
    pruned, counts = prune(model.unflatten(w), model.unflatten(mask), rate)
    new_mask = _flat_masks(exp, pruned)
    return new_mask * (w - w_global), new_mask, counts


def test_two_rounds_of_one_client_equal_the_official_order(real_data_dir: Path) -> None:
    exp = Experiment.prepare(make_config(_cfg(real_data_dir)))
    lockdown = exp.defenses[0]
    assert isinstance(lockdown, Lockdown)
    model, c = exp.model, 2
    shapes = dict(zip(model.names, model.shapes, strict=True))
    first = init_masks(
        shapes, erk_densities(shapes, 0.25), torch_generator(exp.cfg.seed, "lockdown", "init")
    )
    mask = _flat_masks(exp, first)
    assert 0.2 < float(mask.mean()) < 0.3
    w = exp.initial_weights()
    removed = None
    for t in (1, 2):
        got = client_update(exp, t, c, False, w)[0]
        want, mask, removed = _reference_round(exp, t, c, w, mask, removed)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-7)
        assert torch.equal(lockdown.masks[c].mask, mask)
        assert (got[mask == 0] == 0).all() and (got[mask == 1] != 0).float().mean() > 0.5
        w = w + 0.5 * got  # any next global model
    assert any(n > 0 for n in removed.values())


def test_a_resumed_run_keeps_every_clients_mask(real_data_dir: Path, tmp_path: Path) -> None:
    whole = run(_cfg(real_data_dir, tmp_path / "whole"), progress=False)
    cut = tmp_path / "cut"
    run(_cfg(real_data_dir, cut), progress=False, callback=lambda r: r["round"] < 2)
    resumed = run(resume=cut, progress=False)
    assert torch.equal(resumed.weights, whole.weights)
    assert (cut / "rounds.jsonl").read_bytes() == (tmp_path / "whole" / "rounds.jsonl").read_bytes()
    shutil.rmtree(tmp_path / "whole")


def test_consensus_votes_count_every_benign_clients_mask(real_data_dir: Path) -> None:
    exp = Experiment.prepare(make_config(_cfg(real_data_dir)))
    lockdown = exp.defenses[0]
    assert isinstance(lockdown, Lockdown)
    w = exp.initial_weights()
    for t in (1, 2):
        plan = exp.round_plan(t)
        for c in plan.clients:
            client_update(exp, t, c, False, w)
    # the round-2 start masks: round 1's clients pruned, the others their first mask
    named = exp.model.unflatten
    all_masks = [named(lockdown.round_start_mask(exp, c)) for c in range(5)]
    for theta in (1, 3, 5):
        want = consensus(named(torch.ones_like(w)), all_masks, theta)
        got = (consensus_votes(exp, lockdown) >= theta).to(w.dtype)
        assert torch.equal(got, torch.cat([want[n].reshape(-1) for n in exp.model.names]))
    first_round = exp.round_plan(1).clients
    assert not torch.equal(
        lockdown.round_start_mask(exp, first_round[0]), lockdown.initial_mask(exp, 0)
    )


def test_consensus_fusion_metric_is_recorded_each_round(
    real_data_dir: Path, tmp_path: Path
) -> None:
    """With θ above the number of clients nothing survives fusion: the fused model is all
    zeros, whose equal scores pick class 0 for every image (accuracy: class 0's share; the
    backdoor succeeds only if its target is 0)."""
    attack = {"enabled": True, "name": "badnets", "num_malicious": 1, "rounds": [1, 2]}
    out = run(
        _cfg(
            real_data_dir,
            tmp_path / "cf",
            attack=attack,
            eval={"metrics": [{"name": "lockdown_cf", "options": {"theta": 99}}]},
        ),
        progress=False,
    )
    exp = Experiment.prepare(out.config)
    _, y = exp.test_data(ROUNDS)
    for rec in out.records:
        assert rec["cf_acc"] == float((y == 0).double().mean())
        assert rec["cf_backdoor_acc"] == (1.0 if exp.attack.target == 0 else 0.0)

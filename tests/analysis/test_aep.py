"""AEP analysis on real Fashion-MNIST (tiny runs): the counterfactual's exactness, and eq. 7's
propagation against brute-force finite differences of two real rounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flwbc.analysis.aep import AEPOptions, analyze, analyze_run, counterfactual, propagate
from flwbc.api import run
from flwbc.config import make_config
from flwbc.engine import sequential
from flwbc.experiment import Experiment
from flwbc.runio import read_jsonl


def _cfg(data_dir: Path, **over):
    base = {
        "data": {"name": "fmnist", "dir": str(data_dir), "train_fraction": 0.05},
        "federation": {"num_clients": 20, "clients_per_round": 4, "rounds": 4},
        "local": {"epochs": 1, "batch_size": 10},
        "attack": {"num_malicious": 2, "rounds": [3], "epochs": 2},
        "eval": {"batch_size": 2000},
    }
    return make_config(base, **over)


OFF = AEPOptions(estimator_rounds=0, hessian_clients=0)


@pytest.mark.slow
@pytest.mark.parametrize("defense", ["none", "wbc"])
def test_delta_is_exactly_zero_before_the_attack(real_data_dir, defense):
    recs = analyze(_cfg(real_data_dir, **{"defense.client": defense}), OFF, progress=False)
    assert [r["adversarial"] for r in recs] == [False, False, True, False]
    assert [r["delta_norm"] for r in recs[:2]] == [0.0, 0.0]
    assert [r["fm_gap"] for r in recs[:2]] == [0.0, 0.0]
    assert recs[2]["delta_norm"] > 0 and recs[3]["delta_norm"] > 0
    # the attack lowers the attacker's loss relative to the counterfactual
    assert recs[2]["fm_gap"] < 0
    # ‖δ_t − δ_{t−1}‖ is consistent with the norms (triangle inequality)
    assert recs[3]["delta_change"] >= abs(recs[3]["delta_norm"] - recs[2]["delta_norm"]) - 1e-9


@pytest.mark.slow
def test_counterfactual_of_a_run_without_attacks_is_the_run(real_data_dir, tmp_path):
    cfg = _cfg(
        real_data_dir,
        **{
            "attack.rounds": None,
            "attack.prob": 0.0,
            "defense.client": "wbc",
            "output.dir": str(tmp_path),
            "output.name": "r",
            "federation.rounds": 3,
        },
    )
    recs = analyze(cfg, OFF, progress=False)
    assert all(r["delta_norm"] == 0.0 and r["fm_gap"] == 0.0 for r in recs)
    # and the replay is the recorded run: same attacker loss per round as the run's own model
    result = run(cfg, progress=False)
    exp = Experiment.prepare(cfg)
    from flwbc.analysis.aep import malicious_loss

    assert recs[-1]["fm"] == malicious_loss(exp, result.weights.to(exp.dtype))


@pytest.mark.slow
def test_propagation_matches_finite_differences(real_data_dir):
    """Eq. 7 linearises a round: train_round(w + εd) − train_round(w) ≈ ε·propagate(d)."""
    cfg = _cfg(real_data_dir, dtype="float64", engine="sequential", **{"local.momentum": 0.5})
    exp = Experiment.prepare(cfg)
    plan = counterfactual(exp.round_plan(1))
    w = exp.initial_weights()
    d = torch.randn(w.shape, generator=torch.Generator().manual_seed(0), dtype=w.dtype)
    d /= d.norm()
    lin = propagate(exp, plan, w, d)
    base = sequential.train_round(exp, plan, w).weights
    eps = 1e-7  # small enough that no ReLU or max-pool kink is crossed (1e-5 crosses one here)
    fd = (sequential.train_round(exp, plan, w + eps * d).weights - base) / eps
    assert float((fd - lin).norm() / lin.norm()) < 1e-6
    # the curvature matters: ignoring it (δ passed through unchanged) is far off
    assert float((fd - d).norm() / lin.norm()) > 1e-2


@pytest.mark.slow
def test_analyze_run_writes_its_files(real_data_dir, tmp_path):
    cfg = _cfg(
        real_data_dir, **{"output.dir": str(tmp_path), "output.name": "r", "federation.rounds": 4}
    )
    result = run(cfg, progress=False)
    opts = AEPOptions(estimator_rounds=1, hessian_clients=1, hutchinson_samples=2)
    path = analyze_run(result.run_dir, opts, progress=False)
    recs = read_jsonl(path)
    assert [r["round"] for r in recs] == [1, 2, 3, 4]
    assert "estimate_rel_error" in recs[3] and "estimate_rel_error" not in recs[2]
    assert 0.0 <= recs[3]["h_delta_ratio"] <= 1.0 + 1e-9
    assert 0.0 < recs[3]["h_random_ratio"] <= 1.0 + 1e-9
    summary = json.loads((result.run_dir / "analysis.json").read_text())["summary"]
    assert summary["first_attack"] == 3
    assert summary["delta_norm_before_attack_max"] == 0.0
    for ext in ("png", "svg"):
        assert (result.run_dir / f"analysis.{ext}").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["nowhere"], "not a run directory"),
        (["nowhere", "--hutchinson-samples", "0"], "--hutchinson-samples must be positive"),
    ],
)
def test_analyze_bad_input_is_one_line(args, words, capsys):
    from flwbc.cli import main

    assert main(["analyze", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1

"""Every registered aggregator end to end on real data, composed with client-side defenses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import flwbc
from flwbc.errors import FlwbcError
from flwbc.experiment import Experiment
from flwbc.server import AGGREGATORS

pytestmark = pytest.mark.slow


def tiny(real_data_dir: Path, out: Path, name: str, **over: object) -> flwbc.ExperimentConfig:
    """Eight of twelve clients per round (Bulyan with f=1 needs 7), 120 images each, an MLP."""
    base = {
        "seed": 11,
        "model": "mlp",
        "data": {"dir": str(real_data_dir), "train_fraction": 0.024},
        "federation": {"num_clients": 12, "clients_per_round": 8, "rounds": 2},
        "local": {"epochs": 1, "batch_size": 32},
        "attack": {"num_malicious": 2, "rounds": [1], "epochs": 2},
        "output": {"dir": str(out), "name": name},
    }
    return flwbc.make_config(base, **over)


@pytest.mark.parametrize("rule", sorted(AGGREGATORS))
@pytest.mark.parametrize("client", ["none", "wbc"])
def test_every_rule_runs_with_and_without_wbc(
    real_data_dir: Path, tmp_path: Path, rule: str, client: str
) -> None:
    cfg = tiny(
        real_data_dir,
        tmp_path,
        f"{rule}-{client}",
        **{"server.aggregator": rule, "defense.client": client},
    )
    res = flwbc.run(cfg, progress=False)
    assert res.summary["complete"] and len(res.records) == 2
    assert torch.isfinite(res.weights).all()
    if client == "none":
        # FL-WBC's noise dominates these tiny from-scratch updates, and FLTrust then trusts them
        # little, so only the plain runs are required to learn within two rounds
        assert res.records[-1]["test_acc"] > 0.2


def test_ldp_without_noise_or_clipping_equals_plain_fedavg(
    real_data_dir: Path, tmp_path: Path
) -> None:
    plain = flwbc.run(tiny(real_data_dir, tmp_path, "plain"), progress=False)
    ldp0 = flwbc.run(
        tiny(
            real_data_dir,
            tmp_path,
            "ldp0",
            **{"defense.client": "ldp", "defense.ldp.sigma": 0.0, "defense.ldp.clip": 1e9},
        ),
        progress=False,
    )
    assert torch.equal(plain.weights, ldp0.weights)
    ldp = flwbc.run(
        tiny(
            real_data_dir, tmp_path, "ldp", **{"defense.client": "ldp", "defense.ldp.sigma": 0.01}
        ),
        progress=False,
    )
    assert not torch.equal(plain.weights, ldp.weights)


def test_emulated_attackers_are_refused_by_rank_based_rules(
    real_data_dir: Path, tmp_path: Path
) -> None:
    rank_based = sorted(n for n, cls in AGGREGATORS.items() if cls.rank_based)
    assert rank_based, "no rank-based rule registered"
    for rule in rank_based:
        cfg = tiny(
            real_data_dir, tmp_path, rule, **{"server.aggregator": rule, "attack.mode": "emulate"}
        )
        with pytest.raises(FlwbcError, match="emulate"):
            Experiment.prepare(cfg)


def test_stateful_rule_resumes_exactly(real_data_dir: Path, tmp_path: Path) -> None:
    over = {
        "server.aggregator": "centered_clip",
        "server.options": {"tau": 0.05},
        "federation.rounds": 3,
    }
    full = flwbc.run(tiny(real_data_dir, tmp_path, "full", **over), progress=False)
    part = flwbc.run(
        tiny(real_data_dir, tmp_path, "part", **over),
        progress=False,
        callback=lambda r: r["round"] < 2,
    )
    resumed = flwbc.run(resume=part.run_dir, progress=False)
    assert torch.equal(resumed.weights, full.weights)

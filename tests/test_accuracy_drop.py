"""The accuracy drop against a paired clean run, per round, checked against the two runs'
records read independently."""

from __future__ import annotations

from pathlib import Path

import pytest

import flwbc
from flwbc.errors import FlwbcError


def _cfg(data: Path, out: Path, name: str, **over: object) -> dict:
    cfg = {
        "seed": 3,
        "model": "mlp",
        "data": {"dir": str(data), "train_fraction": 0.05},
        "federation": {"num_clients": 10, "clients_per_round": 5, "rounds": 3},
        "local": {"epochs": 1, "batch_size": 32},
        "attack": {"num_malicious": 2, "source": "test", "rounds": [2], "name": "sign_flip"},
        "output": {"dir": str(out), "name": name},
        "threads": 1,
    }
    for k, v in over.items():
        flwbc.config.set_dotted(cfg, k, v)
    return cfg


def test_acc_drop_is_the_clean_runs_accuracy_minus_this_one(
    real_data_dir: Path, tmp_path: Path
) -> None:
    clean = flwbc.run(_cfg(real_data_dir, tmp_path, "clean", **{"attack.name": "honest"}),
                      progress=False)  # fmt: skip
    metric = [{"name": "accuracy_drop", "options": {"clean_run": str(clean.run_dir)}}]
    hit = flwbc.run(_cfg(real_data_dir, tmp_path, "hit", **{"eval.metrics": metric}),
                    progress=False)  # fmt: skip
    # round 1 is benign in both, and the attackers of round 2 are the same clients: the same
    # participants and data order give the same model until the attack
    assert hit.records[0]["test_acc"] == clean.records[0]["test_acc"]
    assert hit.records[0]["acc_drop"] == 0.0
    for a, b in zip(clean.records, hit.records, strict=True):
        assert b["acc_drop"] == pytest.approx(a["test_acc"] - b["test_acc"], abs=1e-15)
    assert hit.records[1]["clients"] == clean.records[1]["clients"]
    assert hit.records[1]["adversarial"] and hit.records[1]["acc_drop"] != 0.0


def test_a_missing_clean_run_is_one_line(real_data_dir: Path, tmp_path: Path) -> None:
    metric = [{"name": "accuracy_drop", "options": {"clean_run": str(tmp_path / "nowhere")}}]
    with pytest.raises(FlwbcError, match="no clean run records at .*nowhere"):
        flwbc.run(_cfg(real_data_dir, tmp_path, "x", **{"eval.metrics": metric}), progress=False)

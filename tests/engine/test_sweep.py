"""Runs of a sweep advance together and each ends as if it had run alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import flwbc

pytestmark = pytest.mark.slow


def cfg(real_data_dir: Path, out: Path, name: str, **over: object) -> flwbc.ExperimentConfig:
    base = {
        "seed": 2,
        "dtype": "float64",
        "model": "mlp",
        "data": {"dir": str(real_data_dir), "train_fraction": 0.05},
        "federation": {"num_clients": 12, "clients_per_round": 5, "rounds": 2},
        "local": {"epochs": 1, "batch_size": 25},
        "attack": {"rounds": [1], "num_malicious": 2, "epochs": 2},
        "output": {"dir": str(out), "name": name},
    }
    return flwbc.make_config(base, **over)


def test_sweep_runs_equal_their_solo_runs(real_data_dir: Path, tmp_path: Path) -> None:
    variants = {
        "s02": {"defense.client": "wbc", "defense.wbc.s": 0.2},
        "s04": {"defense.client": "wbc", "defense.wbc.s": 0.4},
        "s0": {"defense.client": "wbc", "defense.wbc.s": 0.0},
        "median-seed3": {"server.aggregator": "median", "seed": 3},
        "ldp": {"defense.client": "ldp", "defense.ldp.sigma": 0.001},
    }
    together = flwbc.run_many(
        [cfg(real_data_dir, tmp_path / "sweep", n, **v) for n, v in variants.items()],
        progress=False,
    )
    for res, (name, v) in zip(together, variants.items(), strict=True):
        alone = flwbc.run(cfg(real_data_dir, tmp_path / "solo", name, **v), progress=False)
        assert res.summary["complete"] and res.run_dir.name == name
        assert [r["clients"] for r in res.records] == [r["clients"] for r in alone.records]
        torch.testing.assert_close(res.weights, alone.weights, rtol=0, atol=1e-12)
        for a, b in zip(res.records, alone.records, strict=True):
            assert a["target_conf"] == pytest.approx(b["target_conf"], abs=1e-9)
            assert a.get("wbc_perturbed") == pytest.approx(b.get("wbc_perturbed"), abs=1e-9)
    s0 = together[2].records
    assert all(r["wbc_perturbed"] == 0.0 for r in s0)

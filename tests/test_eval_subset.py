"""`eval.test_size` evaluates a fixed subset of the test set, and the `trigger` metric measures a
backdoor's success on a run that does not carry it exactly as the attacked run measures it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flwbc.api import run
from flwbc.config import make_config
from flwbc.errors import FlwbcError
from flwbc.experiment import Experiment

BASE = {
    "data": {"name": "fmnist", "train_fraction": 0.05},
    "federation": {"num_clients": 10, "clients_per_round": 5, "rounds": 2},
    "local": {"epochs": 1, "batch_size": 32},
    "attack": {"num_malicious": 2, "source": "test", "schedule": {"name": "continuous"}},
    "threads": 1,
}


def _cfg(tmp: Path, data: Path, **over: object) -> dict:
    cfg = {**BASE, "output": {"dir": str(tmp), "checkpoint_every": 0}}
    cfg["data"] = {**BASE["data"], "dir": str(data)}
    cfg.update(over)
    return cfg


def test_test_size_evaluates_a_seeded_subset(real_data_dir: Path, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, real_data_dir, attack={**BASE["attack"], "name": "honest"})
    cfg["eval"] = {"test_size": 700, "final_on_subset": True}
    result = run(cfg, progress=False)
    exp = Experiment.prepare(make_config(cfg))
    ds = exp.dataset
    sub = exp.test_subset()
    assert sub is not None and len(sub) == 700 and len(set(sub.tolist())) == 700

    def accuracy(idx: torch.Tensor | None) -> float:
        x, y = (ds.test_x, ds.test_y) if idx is None else (ds.test_x[idx], ds.test_y[idx])
        with torch.no_grad():
            logits = exp.model(result.weights, ds.normalize(x).to(result.weights.dtype))
        return float((logits.argmax(1) == y).double().mean())

    # the subset is the model's accuracy on those images, computed here by hand
    assert result.records[-1]["test_acc"] == pytest.approx(accuracy(sub), abs=1e-12)
    # by default the last round is evaluated on the whole test set, earlier rounds on the subset
    cfg["eval"] = {"test_size": 700}
    cfg["output"] = {**cfg["output"], "dir": str(tmp_path / "final-full")}
    default = run(cfg, progress=False)
    assert torch.equal(default.weights, result.weights)
    assert default.records[0]["test_acc"] == result.records[0]["test_acc"]
    assert default.records[-1]["test_acc"] == pytest.approx(accuracy(None), abs=1e-12)
    assert accuracy(None) != accuracy(sub)
    assert Experiment.prepare(make_config(cfg)).test_subset(2) is None
    # the same seed draws the same subset; a test_size over the test set is the whole set
    assert torch.equal(Experiment.prepare(make_config(cfg)).test_subset(), sub)
    cfg["eval"] = {"test_size": 10**6}
    assert Experiment.prepare(make_config(cfg)).test_subset() is None


def test_the_trigger_metric_is_the_attacks_own_measure(real_data_dir: Path, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, real_data_dir, attack={**BASE["attack"], "name": "badnets"})
    cfg["eval"] = {
        "test_size": 900,
        "metrics": [{"name": "trigger", "options": {"attacks": ["badnets"]}}],
    }
    recs = run(cfg, progress=False).records
    assert all(r["backdoor_acc.badnets"] == r["backdoor_acc"] for r in recs)
    assert any(r["backdoor_acc"] > 0 for r in recs)
    cfg["eval"] = {"metrics": [{"name": "trigger", "options": {"attacks": ["sign_flip"]}}]}
    with pytest.raises(FlwbcError, match="has no trigger"):
        run(cfg, progress=False)

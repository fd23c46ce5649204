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
    cfg["eval"] = {"test_size": 700}
    result = run(cfg, progress=False)
    exp = Experiment.prepare(make_config(cfg))
    ds = exp.dataset
    sub = exp.test_subset()
    assert sub is not None and len(sub) == 700 and len(set(sub.tolist())) == 700
    # the subset is the model's accuracy on those images, computed here by hand
    with torch.no_grad():
        x = ds.normalize(ds.test_x[sub]).to(result.weights.dtype)
        logits = exp.model(result.weights, x)
        want = float((logits.argmax(1) == ds.test_y[sub]).double().mean())
    assert result.records[-1]["test_acc"] == pytest.approx(want, abs=1e-12)
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

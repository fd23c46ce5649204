"""End-to-end runs on real Fashion-MNIST: results on disk, determinism, resume, warm start."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

import flwbc
from flwbc.experiment import Experiment
from flwbc.runio import load_model

pytestmark = pytest.mark.slow


def small_config(
    real_data_dir: Path, out: Path, name: str, **over: object
) -> flwbc.ExperimentConfig:
    """Ten clients with 300 images each, four per round, one local epoch of batch 32."""
    base = {
        "seed": 3,
        "data": {"dir": str(real_data_dir), "train_fraction": 0.05},
        "federation": {"num_clients": 10, "clients_per_round": 4, "rounds": 3},
        "local": {"epochs": 1, "batch_size": 32},
        "attack": {"num_malicious": 2, "num_images": 3, "rounds": [2], "epochs": 5},
        "output": {"dir": str(out), "name": name},
    }
    return flwbc.make_config(base, **over)


def test_end_to_end_run_writes_its_directory(real_data_dir: Path, tmp_path: Path) -> None:
    cfg = small_config(real_data_dir, tmp_path, "e2e", **{"defense.client": "wbc"})
    res = flwbc.run(cfg, progress=False)
    d = res.run_dir
    assert {p.name for p in d.iterdir()} >= {
        "config.json",
        "rounds.jsonl",
        "timings.jsonl",
        "summary.json",
        "model.safetensors",
        "checkpoint.safetensors",
    }
    saved = json.loads((d / "config.json").read_text())
    assert saved["_meta"]["flwbc_version"] == flwbc.__version__
    # the kernels' instruction set, which float results move with
    assert saved["_meta"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert saved["_meta"]["machine"] == platform.machine()
    assert saved["defense"]["client"] == "wbc"

    records = [json.loads(line) for line in (d / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2, 3]
    assert [r["adversarial"] for r in records] == [False, True, False]
    adv = records[1]
    assert len(adv["clients"]) == 4 and len(adv["malicious"]) == 2
    assert set(adv["malicious"]) == set(res.summary["malicious_clients"])
    assert records[0]["malicious"] == [] and records[2]["malicious"] == []
    for r in records:
        assert 0.0 <= r["test_acc"] <= 1.0 and r["test_loss"] > 0
        assert 0.0 <= r["target_conf"] <= 1.0 and r["target_acc"] in (0.0, 1 / 3, 2 / 3, 1.0)
        assert 0.0 < r["wbc_perturbed"] <= 1.0
    # learning happens: better than chance (10 classes) after three short rounds
    assert records[-1]["test_acc"] > 0.3

    summary = json.loads((d / "summary.json").read_text())
    assert summary["complete"] and summary["adversarial_rounds"] == [2]
    assert [m["round"] for m in summary["mitigation"]] == [2]

    w, meta = load_model(d / "model.safetensors", Experiment.prepare(cfg).model)
    assert torch.equal(w, res.weights) and meta["round"] == 3


def test_same_seed_same_rounds_file_bit_for_bit(real_data_dir: Path, tmp_path: Path) -> None:
    over = {"defense.client": "wbc", "federation.rounds": 2, "attack.rounds": [1]}
    a = flwbc.run(small_config(real_data_dir, tmp_path, "a", **over), progress=False)
    b = flwbc.run(small_config(real_data_dir, tmp_path, "b", **over), progress=False)
    assert (a.run_dir / "rounds.jsonl").read_bytes() == (b.run_dir / "rounds.jsonl").read_bytes()
    assert torch.equal(a.weights, b.weights)
    c = flwbc.run(small_config(real_data_dir, tmp_path, "c", seed=4, **over), progress=False)
    assert (c.run_dir / "rounds.jsonl").read_bytes() != (a.run_dir / "rounds.jsonl").read_bytes()


def test_interrupted_run_resumes_exactly(real_data_dir: Path, tmp_path: Path) -> None:
    full = flwbc.run(small_config(real_data_dir, tmp_path, "full"), progress=False)
    part = flwbc.run(
        small_config(real_data_dir, tmp_path, "part"),
        progress=False,
        callback=lambda rec: rec["round"] < 2,
    )
    assert not part.summary["complete"] and part.summary["rounds_done"] == 2
    assert not (part.run_dir / "model.safetensors").exists()
    # a record written after the last checkpoint (crash between the two writes) is discarded
    with open(part.run_dir / "rounds.jsonl", "a") as f:
        f.write(json.dumps({**part.records[-1], "round": 3}) + "\n")
    resumed = flwbc.run(resume=part.run_dir, progress=False)
    assert resumed.summary["complete"]
    assert (resumed.run_dir / "rounds.jsonl").read_bytes() == (
        full.run_dir / "rounds.jsonl"
    ).read_bytes()
    assert torch.equal(resumed.weights, full.weights)


def test_warm_start_branches_share_clients_and_data_order(
    real_data_dir: Path, tmp_path: Path
) -> None:
    """Two defenses run from one saved model see the same participants; without FL-WBC and
    with s = 0 they are the same run."""
    base = flwbc.run(
        small_config(
            real_data_dir,
            tmp_path,
            "base",
            **{"attack.enabled": True, "attack.rounds": None, "attack.prob": 0.0},
        ),
        progress=False,
    )
    init = str(base.run_dir / "model.safetensors")
    over = {"init_model": init, "federation.rounds": 2, "attack.rounds": [1]}
    plain = flwbc.run(small_config(real_data_dir, tmp_path, "plain", **over), progress=False)
    zero = flwbc.run(
        small_config(
            real_data_dir,
            tmp_path,
            "zero",
            **over,
            **{"defense.client": "wbc", "defense.wbc.s": 0.0},
        ),
        progress=False,
    )
    wbc = flwbc.run(
        small_config(real_data_dir, tmp_path, "wbc", **over, **{"defense.client": "wbc"}),
        progress=False,
    )
    assert [r["clients"] for r in plain.records] == [r["clients"] for r in wbc.records]
    assert torch.equal(plain.weights, zero.weights)
    assert not torch.equal(plain.weights, wbc.weights)


def test_malicious_images_are_held_out_of_every_client(real_data_dir: Path, tmp_path: Path) -> None:
    cfg = small_config(
        real_data_dir, tmp_path, "holdout", **{"attack.num_images": 10, "data.train_fraction": 1.0}
    )
    exp = Experiment.prepare(cfg)
    held = set(exp.malicious_set.indices.tolist())
    assert len(held) == 10
    used = np.concatenate(exp.client_indices)
    assert held.isdisjoint(used.tolist())
    labels = exp.dataset.train_y.numpy()
    assert np.all(exp.malicious_set.true_labels == labels[exp.malicious_set.indices])
    assert np.all(exp.malicious_set.targets != exp.malicious_set.true_labels)


@pytest.mark.parametrize("mode", ["real", "emulate", "boost"])
def test_round_plan_attack_modes(real_data_dir: Path, tmp_path: Path, mode: str) -> None:
    cfg = small_config(real_data_dir, tmp_path, mode, **{"attack.mode": mode, "attack.boost": 3.0})
    exp = Experiment.prepare(cfg)
    benign_plan = exp.round_plan(1)
    assert not benign_plan.adversarial and not any(benign_plan.malicious)
    assert len(benign_plan.clients) == 4 and not set(benign_plan.clients) & set(exp.malicious_ids)
    plan = exp.round_plan(2)
    assert plan.adversarial
    n_mal = sum(plan.malicious)
    w = plan.weights.tolist()
    assert sum(w) == pytest.approx(1.0)
    if mode == "emulate":
        # one attacker stands for two: weight 2 against 1 for each of the two benign clients
        assert n_mal == 1 and len(plan.clients) == 3
        assert w[plan.malicious.index(True)] == pytest.approx(0.5)
    else:
        assert n_mal == 2 and len(plan.clients) == 4
        assert w == pytest.approx([0.25] * 4)


def test_random_adversarial_rounds_follow_probability(real_data_dir: Path, tmp_path: Path) -> None:
    cfg = small_config(
        real_data_dir,
        tmp_path,
        "p",
        **{
            "attack.rounds": None,
            "attack.prob": 0.1,
            "attack.start_round": 5,
            "federation.rounds": 2000,
        },
    )
    exp = Experiment.prepare(cfg)
    flags = [exp.is_adversarial(t) for t in range(1, 2001)]
    assert not any(flags[:4])
    share = sum(flags[4:]) / len(flags[4:])
    assert abs(share - 0.1) < 3 * (0.1 * 0.9 / 1996) ** 0.5


def test_a_run_that_never_finished_a_round_does_not_block_a_new_one(
    real_data_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("FLWBC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FLWBC_MIRROR", "http://127.0.0.1:9/")  # no download: fails at once
    one = {"federation.rounds": 1, "attack.rounds": [1]}
    bad = small_config(real_data_dir, tmp_path, "again", **one, **{"data.dir": str(tmp_path)})
    with pytest.raises(flwbc.errors.FlwbcError, match="not found"):
        flwbc.run(bad, progress=False)
    assert (tmp_path / "again" / "config.json").is_file()  # what the first attempt left
    res = flwbc.run(small_config(real_data_dir, tmp_path, "again", **one), progress=False)
    assert res.summary["complete"]
    cfg = json.loads((res.run_dir / "config.json").read_text())
    assert cfg["data"]["dir"] == str(real_data_dir)  # the new run's config, not the failed one's
    # a directory with a finished round is still never overwritten
    with pytest.raises(flwbc.errors.FlwbcError, match="already holds a run"):
        flwbc.run(small_config(real_data_dir, tmp_path, "again", **one), progress=False)


def test_two_processes_never_write_one_run_directory(real_data_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    run_dir = tmp_path / "busy"
    run_dir.mkdir()
    one = {"federation.rounds": 1, "attack.rounds": [1]}
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
            str(run_dir / ".run.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(flwbc.errors.FlwbcError, match="is in use by another run"):
            flwbc.run(small_config(real_data_dir, tmp_path, "busy", **one), progress=False)
        assert not (run_dir / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    res = flwbc.run(small_config(real_data_dir, tmp_path, "busy", **one), progress=False)
    assert res.summary["complete"]

"""The sweep runner on real Fashion-MNIST: branches start from their warm-up, finished runs are
never redone, a SIGKILLed sweep resumes to the same bits, a failed warm-up skips its branches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

import flwbc
from flwbc.experiments.specs import RunSpec, expand, load_settings, load_spec
from flwbc.experiments.sweep import WALL, is_finished, run_sweep, threads_per_worker
from flwbc.runio import model_metadata
from flwbc.runtime import usable_cpus

pytestmark = pytest.mark.slow

JOBS = 2  # the same in every sweep whose results are compared (so the same threads per worker)


def tiny_runs(
    where: Path,
    data_dir: Path | None,
    *,
    warmup_rounds: int,
    branch_rounds: int,
    settings: dict[str, Any] | None = None,
) -> list[RunSpec]:
    """A spec with one small Fashion-MNIST setting (MLP, 20 clients, 4 a round, 300 images
    each), two points (no defense, CMA) and one seed, written to `where` and expanded."""
    where.mkdir(parents=True, exist_ok=True)
    settings = settings or {
        "tiny": {
            "title": "tiny",
            "warmup_rounds": warmup_rounds,
            "config": {"data": {"name": "fmnist", "partition": "iid"}},
        }
    }
    settings_yaml = {
        "common": {
            "model": "mlp",
            "data": {"train_fraction": 0.1},
            "federation": {"num_clients": 20, "clients_per_round": 4},
            "local": {"epochs": 1, "batch_size": 32},
            "attack": {"num_malicious": 2, "epochs": 1},
            "eval": {"batch_size": 2000},
        },
        "settings": settings,
    }
    spec_yaml = {
        "id": "tiny",
        "title": "tiny",
        "settings": list(settings),
        "seeds": [0],
        "base": {"attack": {"num_images": 1}},
        "branch": {"rounds": branch_rounds, "config": {"attack": {"rounds": [1]}}},
        "axes": {"defense": {"none": {}, "CMA": {"server": {"aggregator": "median"}}}},
    }
    (where / "settings.yaml").write_text(yaml.safe_dump(settings_yaml))
    (where / "spec.yaml").write_text(yaml.safe_dump(spec_yaml))
    s = load_settings(where / "settings.yaml")
    spec = load_spec(str(where / "spec.yaml"), s)
    return expand(spec, s, data_dir=None if data_dir is None else str(data_dir))


def lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSON-lines file, parsed strictly (a torn line fails)."""
    text = path.read_text()
    assert text.endswith("\n"), path
    return [json.loads(line) for line in text.splitlines()]


def assert_complete(run_path: Path, rounds: int) -> None:
    assert is_finished(run_path), run_path
    summary = json.loads((run_path / "summary.json").read_text())
    assert summary["complete"] is True and summary["rounds_done"] == rounds
    assert [r["round"] for r in lines(run_path / "rounds.jsonl")] == list(range(1, rounds + 1))


def dirs_of(runs: list[RunSpec], store: Path) -> dict[str, Path]:
    return {r.key: store / r.dir_name() for r in runs}


def file_stamps(store: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(store)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in store.rglob("*")
        if p.is_file()
    }


# ---------------------------------------------------------------------------------------------
# A finished tiny sweep, shared by the first tests
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def done_sweep(real_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    runs = tiny_runs(root / "spec", real_data_dir, warmup_rounds=3, branch_rounds=2)
    store = root / "store"
    report = run_sweep(runs, store, jobs=JOBS, progress=False)
    return runs, store, report


def test_sweep_runs_everything(done_sweep):
    runs, store, report = done_sweep
    assert report.failed == {}
    assert sorted(report.finished) == sorted(r.key for r in runs)
    assert [r.role for r in runs].count("warmup") == 1 and len(runs) == 3
    warm = next(r for r in runs if r.role == "warmup")
    paths = dirs_of(runs, store)
    assert sorted(p.name for p in store.iterdir()) == sorted(p.name for p in paths.values())
    for r in runs:
        assert_complete(paths[r.key], r.rounds)
        cfg = json.loads((paths[r.key] / "config.json").read_text())
        assert cfg["seed"] == 0 and cfg["federation"]["rounds"] == r.rounds
        assert cfg["threads"] == threads_per_worker(JOBS, usable_cpus())
        if r.role == "warmup":
            assert cfg["init_model"] is None
            assert all(not rec["adversarial"] for rec in lines(paths[r.key] / "rounds.jsonl"))
        else:
            # the branch starts from its warm-up's final model
            assert r.parent == warm.key
            init = Path(cfg["init_model"])
            assert init.name == "model.safetensors"
            assert init.resolve() == (paths[warm.key] / "model.safetensors").resolve()
            assert init.is_file()
            recs = lines(paths[r.key] / "rounds.jsonl")
            assert [rec["adversarial"] for rec in recs] == [True, False]  # attack round 1
        # the sweep's wall time of the run covers at least the compute the run recorded
        wall = json.loads((paths[r.key] / WALL).read_text())
        compute = sum(t["seconds"] for t in lines(paths[r.key] / "timings.jsonl"))
        assert wall["seconds"] >= compute > 0 and wall["from_round"] == 0
    assert not list(store.rglob("*.tmp"))


@pytest.mark.parametrize(
    ("jobs", "cpus", "threads"), [(1, 2, 2), (2, 2, 1), (3, 2, 1), (4, 16, 4), (5, 16, 3)]
)
def test_workers_share_the_cores(jobs, cpus, threads):
    assert threads_per_worker(jobs, cpus) == threads


def test_branch_continues_the_warm_model(done_sweep):
    """Rerun a branch's config alone: from the warm-up's final model it gives the sweep's
    records bit for bit; from a fresh model it does not."""
    runs, store, _ = done_sweep
    warm = next(r for r in runs if r.role == "warmup")
    branch = next(r for r in runs if r.coords.get("defense") == "none")
    paths = dirs_of(runs, store)
    warm_model = paths[warm.key] / "model.safetensors"
    # the warm-up's model file is its last round's model
    with safe_open(str(warm_model), framework="pt") as f:
        assert json.loads(f.metadata()["round"]) == warm.rounds
    cfg = json.loads((paths[branch.key] / "config.json").read_text())
    cfg.pop("_meta")
    threads = torch.get_num_threads()
    try:
        out = {}
        for name, init in (("warm", str(warm_model)), ("fresh", None)):
            c = {
                **cfg,
                "init_model": init,
                "output": {"dir": str(store.parent / "solo"), "name": name},
            }
            out[name] = flwbc.run(c, progress=False).run_dir / "rounds.jsonl"
    finally:
        torch.set_num_threads(threads)
    ours = (paths[branch.key] / "rounds.jsonl").read_bytes()
    assert out["warm"].read_bytes() == ours
    assert out["fresh"].read_bytes() != ours
    # a warm start is a better start: round 1's accuracy beats training from scratch
    assert lines(out["warm"])[0]["test_acc"] > lines(out["fresh"])[0]["test_acc"]


def test_second_sweep_redoes_nothing(done_sweep):
    runs, store, _ = done_sweep
    before = file_stamps(store)
    assert any(k.endswith("rounds.jsonl") for k in before)
    assert any(k.endswith("model.safetensors") for k in before)
    t0 = time.monotonic()
    report = run_sweep(runs, store, jobs=JOBS, progress=False)
    elapsed = time.monotonic() - t0
    assert report.failed == {}
    assert sorted(report.finished) == sorted(r.key for r in runs)
    assert file_stamps(store) == before  # no file written, not even a worker log line
    assert elapsed < 2.0  # no worker was started (one takes seconds to import torch)


# ---------------------------------------------------------------------------------------------
# Resume after SIGKILL
# ---------------------------------------------------------------------------------------------

SWEEP_SCRIPT = """\
import sys
from pathlib import Path
from flwbc.experiments.specs import expand, load_settings, load_spec
from flwbc.experiments.sweep import run_sweep

where, data_dir, store, jobs = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
settings = load_settings(where / "settings.yaml")
runs = expand(load_spec(str(where / "spec.yaml"), settings), settings, data_dir=data_dir)
report = run_sweep(runs, store, jobs=jobs, progress=False)
sys.exit(1 if report.failed else 0)
"""


PGRP, SESSION = 2, 3
"""Positions in /proc/PID/stat after the command name: the process group and the session."""


def stat_field(pid: int, field: int) -> int | None:
    """A numeric field of /proc/PID/stat (`PGRP`, `SESSION`); None if the process is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[field])
    except (OSError, IndexError, ValueError):
        return None


def live_pids(field: int, value: int) -> list[int]:
    """The live (non-zombie) processes whose /proc stat `field` equals `value`."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[field]) == value and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def _ckpt_round(path: Path) -> int:
    return int(model_metadata(path)["round"])


def test_sweep_resumes_after_sigkill_to_the_same_results(real_data_dir, tmp_path):
    warmup_rounds, branch_rounds = 3, 8
    where = tmp_path / "spec"
    runs = tiny_runs(where, real_data_dir, warmup_rounds=warmup_rounds, branch_rounds=branch_rounds)
    branches = [r for r in runs if r.role == "branch"]

    # the reference: the same sweep, uninterrupted
    ref_store = tmp_path / "ref"
    assert run_sweep(runs, ref_store, jobs=JOBS, progress=False).failed == {}

    # the same sweep in its own process group, killed once a branch is half-way
    store = tmp_path / "store"
    script = tmp_path / "sweep.py"
    script.write_text(SWEEP_SCRIPT)
    log = open(tmp_path / "killed.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, str(script), str(where), str(real_data_dir), str(store), str(JOBS)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    paths = dirs_of(runs, store)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "no branch started in time"
            logged = {
                r.key: (paths[r.key] / "rounds.jsonl").read_bytes().count(b"\n")
                if (paths[r.key] / "rounds.jsonl").exists()
                else 0
                for r in branches
            }
            if any(2 <= n < branch_rounds for n in logged.values()):  # a checkpoint exists
                break
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    deadline = time.monotonic() + 20
    while live_pids(PGRP, proc.pid):  # the workers die with the sweep
        assert time.monotonic() < deadline, "workers outlived the killed sweep"
        time.sleep(0.05)

    assert not all(is_finished(p) for p in paths.values())
    warm = next(r for r in runs if r.role == "warmup")
    assert is_finished(paths[warm.key])
    # what the killed branches had saved: their checkpoint round and its timing lines
    saved = {}
    for r in branches:
        ckpt = paths[r.key] / "checkpoint.safetensors"
        if ckpt.exists():
            c = _ckpt_round(ckpt)
            saved[r.key] = (c, (paths[r.key] / "timings.jsonl").read_text().splitlines()[:c])
    assert any(c > 0 for c, _ in saved.values())
    # temp files a kill mid-write leaves behind (see test_stale_temp_files_are_removed)
    stale = set(store.rglob("*.tmp"))

    report = run_sweep(runs, store, jobs=JOBS, progress=False)
    assert report.failed == {}
    assert sorted(report.finished) == sorted(r.key for r in runs)
    assert set(store.rglob("*.tmp")) <= stale, "the resumed sweep left temp files"
    ref_paths = dirs_of(runs, ref_store)
    for r in runs:
        assert_complete(paths[r.key], r.rounds)
        assert (paths[r.key] / "rounds.jsonl").read_bytes() == (
            ref_paths[r.key] / "rounds.jsonl"
        ).read_bytes(), r.label
        ours = load_file(paths[r.key] / "model.safetensors")
        ref = load_file(ref_paths[r.key] / "model.safetensors")
        assert ours.keys() == ref.keys()
        assert all(torch.equal(ours[k], ref[k]) for k in ours)
    # the interrupted branches continued from their checkpoints, they did not start over:
    # the wall times of the rounds they had finished are still there
    for key, (c, timing_lines) in saved.items():
        assert (paths[key] / "timings.jsonl").read_text().splitlines()[:c] == timing_lines


def test_stale_temp_files_are_removed(real_data_dir, tmp_path):
    runs = tiny_runs(tmp_path / "spec", real_data_dir, warmup_rounds=1, branch_rounds=1)
    warm = [r for r in runs if r.role == "warmup"]
    store = tmp_path / "store"
    stale = store / warm[0].dir_name() / ".checkpoint.safetensors.abc123.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a model")
    assert run_sweep(warm, store, jobs=1, progress=False).failed == {}
    assert is_finished(stale.parent)
    assert not list(store.rglob("*.tmp"))


# ---------------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------------


def test_failed_warmup_skips_its_branches(real_data_dir, tmp_path, monkeypatch):
    # no dataset anywhere for the "bad" setting: an empty data dir, an empty cache, and a
    # download mirror that refuses connections; this fails only when the run starts
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("FLWBC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FLWBC_MIRROR", "http://127.0.0.1:9")
    setting = {"data": {"name": "fmnist", "partition": "iid"}}
    runs = tiny_runs(
        tmp_path / "spec",
        None,
        warmup_rounds=1,
        branch_rounds=1,
        settings={
            "bad": {
                "title": "bad",
                "warmup_rounds": 1,
                # differs from "good" in more than where its data lives (not part of a run's key)
                "config": {"data": {**setting["data"], "dir": str(empty), "partition": "shards"}},
            },
            "good": {
                "title": "good",
                "warmup_rounds": 1,
                "config": {"data": {**setting["data"], "dir": str(real_data_dir)}},
            },
        },
    )
    assert len(runs) == 6  # expanding validated every config: nothing failed yet
    store = tmp_path / "store"
    report = run_sweep(runs, store, jobs=JOBS, progress=False)
    paths = dirs_of(runs, store)
    bad = [r for r in runs if r.coords["setting"] == "bad"]
    good = [r for r in runs if r.coords["setting"] == "good"]
    bad_warm = next(r for r in bad if r.role == "warmup")

    # the good setting is not held up by the bad one
    assert sorted(report.finished) == sorted(r.key for r in good)
    for r in good:
        assert_complete(paths[r.key], r.rounds)
    # the bad warm-up failed and says where its log is
    assert set(report.failed) == {r.key for r in bad}
    worker_log = paths[bad_warm.key] / "worker.log"
    assert str(worker_log) in report.failed[bad_warm.key]
    assert "error:" in worker_log.read_text() and "fmnist" in worker_log.read_text()
    assert not is_finished(paths[bad_warm.key])
    # its branches were never launched, and their reason names the warm-up
    for r in bad:
        if r.role == "branch":
            assert not paths[r.key].exists()
            assert bad_warm.dir_name() in report.failed[r.key]


def test_a_reused_worker_gives_the_bits_of_a_fresh_process(done_sweep, tmp_path, monkeypatch):
    """The default local backend runs a slot's runs one after another in one process; the same
    sweep with a fresh process per run writes byte-identical records and equal models."""
    from flwbc.experiments import sweep as sweep_module
    from flwbc.experiments.local_backend import LocalBackend

    runs, store, _ = done_sweep
    monkeypatch.setattr(sweep_module, "LocalBackend", lambda jobs: LocalBackend(jobs, reuse=False))
    fresh = tmp_path / "fresh"
    report = run_sweep(runs, fresh, jobs=JOBS, progress=False)
    assert sorted(report.finished) == sorted(r.key for r in runs)
    for r in runs:
        a, b = store / r.dir_name(), fresh / r.dir_name()
        assert (a / "rounds.jsonl").read_bytes() == (b / "rounds.jsonl").read_bytes()
        wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_one_slot_runs_every_run_of_a_sweep_in_one_worker(real_data_dir, tmp_path, monkeypatch):
    """With reuse (the default) a slot starts one worker process and hands it run after run:
    a sweep of three runs on one slot spawns one process."""
    from flwbc.experiments.local_backend import LocalBackend

    spawned: list[list[str]] = []
    real = LocalBackend._spawn

    def counting(self, args, out, serve):  # noqa: ANN001, ANN202
        spawned.append(args)
        return real(self, args, out, serve)

    monkeypatch.setattr(LocalBackend, "_spawn", counting)
    runs = tiny_runs(tmp_path / "spec", real_data_dir, warmup_rounds=1, branch_rounds=1)
    report = run_sweep(runs, tmp_path / "store", jobs=1, progress=False)
    assert len(report.finished) == len(runs) == 3
    assert spawned == [["--serve"]]

"""The Ray sweep backend on a two-node Ray cluster on 127.0.0.1 (`ray start --head` and a second
`ray start --address`, each with its own temporary directory, every process of both stopped by
the tests): a sweep's results equal the local backend's bit for bit; plug-ins reach the
workers; a run's own error is reported, not retried; a node killed mid-run has its run finish
on the other node, continued from the driver's last copy, and a killed driver resumes; both
with the same results."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import flwbc
from flwbc.experiments.ray_backend import RayOptions
from flwbc.experiments.specs import RunSpec, run_key
from flwbc.experiments.sweep import is_finished, run_dir, run_sweep
from flwbc.runio import model_metadata

from .test_sweep import (
    JOBS,
    SESSION,
    assert_complete,
    dirs_of,
    file_stamps,
    live_pids,
    stat_field,
    tiny_runs,
)

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

WARMUP_ROUNDS, BRANCH_ROUNDS = 2, 6
START_TIMEOUT = 120.0
SWEEP_TIMEOUT = 300.0
SRC = Path(flwbc.__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# A two-node cluster on this machine
# ---------------------------------------------------------------------------------------------


def with_our_flwbc() -> dict[str, str]:
    """The environment with this flwbc first on PYTHONPATH, for the processes the tests start
    (the nodes' workers and a driver) to import the flwbc under test."""
    path = [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """One `ray start --block` in its own session, so that its processes are exactly those of
    the session and none survives `kill`."""

    def __init__(self, name: str, args: list[str], root: Path) -> None:
        self.name = name
        self.temp = root / name
        self.temp.mkdir()
        self.log = root / f"{name}.log"
        env = with_our_flwbc()
        env.pop("RAY_ADDRESS", None)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ray.scripts.scripts",
                    "start",
                    *args,
                    "--num-cpus=1",
                    "--node-ip-address=127.0.0.1",
                    f"--temp-dir={self.temp}",
                    f"--dashboard-agent-listen-port={_free_port()}",
                    f"--object-store-memory={200 * 2**20}",
                    "--disable-usage-stats",
                    "--block",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )

    def wait_started(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while "Ray runtime started" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray node {self.name} did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def owns(self, pid: int) -> bool:
        return stat_field(pid, SESSION) == self.proc.pid

    def kill(self) -> None:
        """SIGKILL every process of the node at once, as a machine that dies."""
        for pid in live_pids(SESSION, self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while live_pids(SESSION, self.proc.pid):
            assert time.monotonic() < deadline, f"processes of ray node {self.name} survived"
            time.sleep(0.1)


class Cluster:
    """A head and a second node, each with one CPU; `stop` ends every process of both."""

    def __init__(self, root: Path) -> None:
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        self.nodes: list[Node] = []
        try:
            head_flags = [
                "--head",
                f"--port={port}",
                "--include-dashboard=false",
                f"--dashboard-port={_free_port()}",
                f"--ray-client-server-port={_free_port()}",
            ]
            self.head = self._start(Node("head", head_flags, root))
            self.second = self._start(Node("second", [f"--address={self.address}"], root))
        except BaseException:
            self.stop()
            raise

    def _start(self, node: Node) -> Node:
        self.nodes.append(node)
        node.wait_started()
        return node

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.kill()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="flwbc-raytest-", dir="/tmp"))  # short: socket paths
    try:
        made = Cluster(root)
        try:
            yield made
        finally:
            made.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def ray_options(cluster: Cluster, **over: Any) -> RayOptions:
    return RayOptions(address=cluster.address, cpus_per_run=1, **over)


# ---------------------------------------------------------------------------------------------
# The same runs on the local backend
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(real_data_dir, tmp_path_factory) -> tuple[Path, list[RunSpec], Path]:
    """The spec (its folder and runs) and the local backend's store of it."""
    root = tmp_path_factory.mktemp("ray-ref")
    runs = tiny_runs(
        root / "spec", real_data_dir, warmup_rounds=WARMUP_ROUNDS, branch_rounds=BRANCH_ROUNDS
    )
    store = root / "local"
    report = run_sweep(runs, store, jobs=JOBS, threads=1, progress=False)
    assert report.failed == {}
    return root / "spec", runs, store


def assert_same_results(runs: list[RunSpec], ours: Path, ref: Path) -> None:
    """Every run's records, final model, summary and config (but for where it was written and
    when) are the local backend's."""
    for r in runs:
        a, b = run_dir(ours, r), run_dir(ref, r)
        assert_complete(a, r.rounds)
        assert (a / "rounds.jsonl").read_bytes() == (b / "rounds.jsonl").read_bytes(), r.label
        ma, mb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
        assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma), r.label
        sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
        sa.pop("seconds_this_session"), sb.pop("seconds_this_session")
        assert sa == sb
        ca, cb = (json.loads((d / "config.json").read_text()) for d in (a, b))
        for c, store in ((ca, ours), (cb, ref)):
            c.pop("_meta")
            assert c["output"]["dir"] == str(store.resolve())
            c["output"].pop("dir")
            if r.parent is not None:
                parent = Path(c.pop("init_model"))
                assert parent.is_file() and parent.parent.parent == store.resolve()
        assert ca == cb
    assert not list(ours.rglob("*.tmp"))


def attempts(path: Path) -> list[str]:
    """The Ray backend's lines in a run's worker.log."""
    log = path / "worker.log"
    return [ln for ln in log.read_text().splitlines() if " ray: " in ln] if log.is_file() else []


def node_of(line: str) -> str:
    return line.split(" on node ")[1].split()[0]


def worker_pid(line: str) -> int:
    return int(line.split(", pid ")[1].split(")")[0])


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_a_sweep_on_two_nodes_equals_the_local_one(cluster, reference, tmp_path):
    _, runs, ref = reference
    store = tmp_path / "store"
    report = run_sweep(runs, store, backend="ray", ray_options=ray_options(cluster), progress=False)
    assert report.failed == {}
    assert sorted(report.finished) == sorted(r.key for r in runs)
    assert_same_results(runs, store, ref)
    starts = [ln for r in runs for ln in attempts(run_dir(store, r)) if " attempt " in ln]
    assert len(starts) == len(runs)  # one attempt each
    # the two branches ran at once, one on each single-CPU node
    assert len({node_of(ln) for ln in starts}) == 2, starts

    # a second sweep finds everything finished: it neither connects to Ray nor writes a file
    before = file_stamps(store)
    again = run_sweep(runs, store, backend="ray", ray_options=ray_options(cluster), progress=False)
    assert again.failed == {} and sorted(again.finished) == sorted(r.key for r in runs)
    assert file_stamps(store) == before
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


PLUGIN = '''
"""A tiny synthetic dataset and two broken ones, registered from outside flwbc."""
import numpy as np
import torch
from flwbc import register_dataset
from flwbc.data import Dataset
from flwbc.errors import FlwbcError


def _split(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.integers(0, 60, (n, 1, 8, 8)).astype(np.uint8)
    for i, c in enumerate(y):
        r, q = divmod(int(c), 2)
        x[i, 0, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] += 150
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))


@register_dataset("raytiles", num_classes=4, default_model="mlp", image_shape=(1, 8, 8))
def raytiles(data_dir=None):
    """Four classes of 8x8 images: a bright square in one quadrant."""
    tx, ty = _split(400, 0)
    vx, vy = _split(100, 1)
    return Dataset("raytiles", tx, ty, vx, vy, 4, (0.3,), (0.3,))


@register_dataset("raytiles_missing", num_classes=4, default_model="mlp", image_shape=(1, 8, 8))
def raytiles_missing(data_dir=None):
    """Raises a user error, as a missing dataset does."""
    raise FlwbcError("raytiles_missing is missing on purpose")


@register_dataset("raytiles_bug", num_classes=4, default_model="mlp", image_shape=(1, 8, 8))
def raytiles_bug(data_dir=None):
    """Raises what a bug would."""
    raise ZeroDivisionError("a bug on purpose")
'''


@pytest.fixture()
def plugin_module(tmp_path, monkeypatch) -> Iterator[str]:
    """A plug-in module on this process's path only (not the nodes'); registrations undone."""
    from flwbc import plugins
    from flwbc.data import DATASETS

    site = tmp_path / "site"
    site.mkdir()
    (site / "flwbc_ray_test_plugin.py").write_text(textwrap.dedent(PLUGIN).lstrip())
    saved, loaded = dict(DATASETS), list(plugins.LOADED)
    monkeypatch.syspath_prepend(str(site))
    yield "flwbc_ray_test_plugin"
    sys.modules.pop("flwbc_ray_test_plugin", None)
    DATASETS.clear()
    DATASETS.update(saved)
    plugins.LOADED[:] = loaded


def test_plugins_reach_the_workers_and_run_errors_are_not_retried(cluster, plugin_module, tmp_path):
    base = {
        "plugins": [plugin_module],
        "model": "mlp",
        "federation": {"num_clients": 10, "clients_per_round": 4, "rounds": 3},
        "local": {"epochs": 1, "batch_size": 8},
        "attack": {"num_malicious": 2, "num_images": 2, "rounds": [2], "epochs": 1},
    }
    runs = []
    for name in ("raytiles", "raytiles_missing", "raytiles_bug"):
        cfg = {**base, "data": {"name": name}}
        runs.append(RunSpec(run_key(cfg, None), name, cfg, rounds=3))
    store = tmp_path / "store"
    report = run_sweep(runs, store, backend="ray", ray_options=ray_options(cluster), progress=False)
    good, missing, bug = runs
    assert report.finished == [good.key]
    assert_complete(run_dir(store, good), 3)
    threads = torch.get_num_threads()
    try:
        alone = flwbc.run(
            {**good.config, "threads": 1, "output": {"dir": str(tmp_path), "name": "alone"}},
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    assert (run_dir(store, good) / "rounds.jsonl").read_bytes() == (
        alone.run_dir / "rounds.jsonl"
    ).read_bytes()
    # errors of the run itself: reported with their reason and log, each tried once
    assert set(report.failed) == {missing.key, bug.key}
    assert report.failed[missing.key].startswith("raytiles_missing is missing on purpose (log: ")
    assert report.failed[bug.key].startswith("ZeroDivisionError: a bug on purpose (log: ")
    for r in (missing, bug):
        lines = attempts(run_dir(store, r))
        assert sum(" attempt " in ln for ln in lines) == 1 and "retrying" not in str(lines)
        assert not is_finished(run_dir(store, r))
    assert "Traceback" in (run_dir(store, bug) / "worker.log").read_text()


def _ckpt_round(path: Path) -> int:
    return int(model_metadata(path)["round"])


def _saved(path: Path) -> tuple[int, list[str]]:
    """A run's last saved round in the store and the timing lines up to it."""
    c = _ckpt_round(path / "checkpoint.safetensors")
    return c, (path / "timings.jsonl").read_text().splitlines()[:c]


def test_a_sweep_outlives_a_node_killed_mid_run(cluster, reference, tmp_path):
    _, runs, ref = reference
    store = tmp_path / "store"
    branches = [r for r in runs if r.role == "branch"]
    paths = dirs_of(runs, store)
    killed: dict[str, Any] = {}

    def kill_the_second_node_mid_run() -> None:
        deadline = time.monotonic() + SWEEP_TIMEOUT
        while time.monotonic() < deadline and not killed:
            for r in branches:
                lines = [ln for ln in attempts(paths[r.key]) if " attempt " in ln]
                if not lines or not cluster.second.owns(worker_pid(lines[-1])):
                    continue
                path = paths[r.key]
                if (path / "checkpoint.safetensors").exists() and not is_finished(path):
                    saved = _saved(path)
                    if 1 <= saved[0] <= BRANCH_ROUNDS - 2:
                        cluster.second.kill()
                        killed.update(key=r.key, saved=saved)
                        return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_the_second_node_mid_run, daemon=True)
    killer.start()
    report = run_sweep(runs, store, backend="ray", ray_options=ray_options(cluster), progress=False)
    killer.join(timeout=5)
    assert killed, "no branch was caught mid-run on the second node"
    assert report.failed == {}
    assert sorted(report.finished) == sorted(r.key for r in runs)
    assert_same_results(runs, store, ref)
    lines = attempts(paths[killed["key"]])
    assert any("node died; retrying (1 of 3)" in ln for ln in lines), lines
    # the retry continued from the store's last copy, not from the start
    saved_round, timing_lines = killed["saved"]
    first = [ln for ln in lines if "attempt 1 " in ln]
    resumed = [ln for ln in lines if "attempt 2 " in ln]
    assert len(first) == 1 and len(resumed) == 1, lines
    assert node_of(resumed[0]) != node_of(first[0]), lines
    assert "resuming after round " in resumed[0], lines
    # (the driver may have saved a round more between the look and the kill)
    assert int(resumed[0].rsplit(" ", 1)[1]) >= saved_round
    timings = (paths[killed["key"]] / "timings.jsonl").read_text().splitlines()
    assert timings[:saved_round] == timing_lines


DRIVER = """\
import sys
from pathlib import Path
from flwbc.experiments.ray_backend import RayOptions
from flwbc.experiments.specs import expand, load_settings, load_spec
from flwbc.experiments.sweep import run_sweep

where, data_dir, store, address = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]
settings = load_settings(where / "settings.yaml")
runs = expand(load_spec(str(where / "spec.yaml"), settings), settings, data_dir=data_dir)
options = RayOptions(address=address, cpus_per_run=1)
report = run_sweep(runs, store, backend="ray", ray_options=options, progress=False)
sys.exit(1 if report.failed else 0)
"""


def test_a_killed_driver_resumes_to_the_same_results(cluster, reference, real_data_dir, tmp_path):
    spec_dir, runs, ref = reference
    store = tmp_path / "store"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    paths = dirs_of(runs, store)
    branches = [r for r in runs if r.role == "branch"]
    env = with_our_flwbc()
    with open(tmp_path / "driver.log", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(spec_dir),
                str(real_data_dir),
                str(store),
                cluster.address,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    saved: dict[str, tuple[int, list[str]]] = {}
    try:
        deadline = time.monotonic() + SWEEP_TIMEOUT
        while not saved:
            assert proc.poll() is None, (
                "the driver ended before it could be killed:\n"
                + (tmp_path / "driver.log").read_text()[-3000:]
            )
            assert time.monotonic() < deadline, "no branch started in time"
            running = {
                b.key: _saved(paths[b.key])
                for b in branches
                if (paths[b.key] / "checkpoint.safetensors").exists()
                and not is_finished(paths[b.key])
            }
            if any(2 <= c <= BRANCH_ROUNDS - 2 for c, _ in running.values()):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                saved = {
                    b.key: _saved(paths[b.key])
                    for b in branches
                    if (paths[b.key] / "checkpoint.safetensors").exists()
                    and not is_finished(paths[b.key])
                }
            time.sleep(0.02)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not all(is_finished(p) for p in paths.values())

    report = run_sweep(runs, store, backend="ray", ray_options=ray_options(cluster), progress=False)
    assert report.failed == {}
    assert sorted(report.finished) == sorted(r.key for r in runs)
    assert_same_results(runs, store, ref)
    for key, (c, timing_lines) in saved.items():
        # continued from the saved round: the wall times of the rounds before it are kept
        assert (paths[key] / "timings.jsonl").read_text().splitlines()[:c] == timing_lines
        assert any(f"resuming after round {c}" in ln for ln in attempts(paths[key]))


# ---------------------------------------------------------------------------------------------
# The command line: one line and exit status 2 for each mistake, before any run
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--address", "127.0.0.1:1"], "--address: only with --backend ray"),
        (["--backend", "ray", "--cpus-per-run", "0"], "--cpus-per-run must be positive, got 0"),
        (["--backend", "ray", "--max-retries", "-1"], "--max-retries must be at least 0, got -1"),
        (["--backend", "ray", "--device", "nope"], "unknown device 'nope'"),
        (["--backend", "ray", "--device", "cuda"], "device cuda on the ray backend needs --gpus"),
        (["--backend", "ray", "--address", "127.0.0.1:PORT"], "cannot reach the Ray cluster's"),
        (["--backend", "ray", "--address", "nowhere"], "--address takes HOST:PORT"),
    ],
)
def test_sweep_commands_refuse_bad_backend_flags(flags, message, tmp_path, capsys):
    from flwbc.cli import main

    flags = [f.replace("PORT", str(_free_port())) for f in flags]
    t0 = time.monotonic()
    assert main(["matrix", "--quick", "--runs", str(tmp_path), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flwbc: error: ") and message in err and err.count("\n") == 1, err
    assert time.monotonic() - t0 < 30
    assert not any(p.is_dir() for p in tmp_path.iterdir())  # no run started


def test_the_ray_backend_without_ray_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    from flwbc.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    argv = ["reproduce", "fig2", "--quick", "--backend", "ray", "--runs", str(tmp_path)]
    assert main(argv) == 2
    assert "the ray backend needs Ray: pip install" in capsys.readouterr().err

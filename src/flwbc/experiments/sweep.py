"""Run a sweep's runs in parallel worker processes, resumably.

Each run lives in `<store>/<label>--<key>`. A run is finished when its `summary.json` says
complete and its `model.safetensors` exists; finished runs are never redone. A run that was
interrupted (Ctrl-C, SIGKILL, power loss) continues from its last per-round checkpoint, and
since every random stream is keyed by (seed, round, client) the result is the same as an
uninterrupted run. Every file is written atomically, so a kill at any moment leaves no
half-written result.

Workers are separate processes (`python -m flwbc.experiments.worker RUN_DIR`) that share the
cores: each gets `cores // jobs` torch threads unless told otherwise (two one-thread processes
share a 2-core machine better than one two-thread process), and they die with the sweep
(PR_SET_PDEATHSIG). A lock file keeps two
sweeps from running the same run at once.

Branches start from their warm-up's saved model, so they wait for it; everything else runs in
the order given, as many at a time as `jobs`.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from flwbc.errors import FlwbcError
from flwbc.experiments.specs import RunSpec, deep_merge
from flwbc.runio import atomic_write_json, read_json
from flwbc.runtime import usable_cpus

REQUEST = "request.json"


def run_dir(store: Path, run: RunSpec) -> Path:
    """The run's directory: `<label>--<key>`, or an existing directory with the same key or one
    of its earlier keys (a store written under other labels or versions stays usable)."""
    path = store / run.dir_name()
    if path.is_dir():
        return path
    for key in (run.key, *run.aliases):
        found = sorted(store.glob(f"*--{key}"))
        if found:
            return found[0]
    return path


def is_finished(path: Path) -> bool:
    summary = path / "summary.json"
    if not summary.is_file() or not (path / "model.safetensors").is_file():
        return False
    try:
        return bool(read_json(summary).get("complete"))
    except (FlwbcError, ValueError):
        return False


def rounds_done(path: Path) -> int:
    """Rounds logged so far (cheap: counts complete lines of rounds.jsonl)."""
    try:
        with open(path / "rounds.jsonl", "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _interrupt_on_sigterm() -> signal.Handlers | None:
    """Treat SIGTERM like Ctrl-C (where a handler can be installed: the main thread)."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)  # type: ignore[return-value]
    except ValueError:
        return None


def threads_per_worker(jobs: int, cpus: int) -> int:
    """Torch threads for each of `jobs` workers on `cpus` cores: an equal share, at least one.

    Sharing out the cores keeps workers from oversubscribing them (here two two-thread
    processes on two cores ran a quarter as fast as two one-thread ones) while a machine with
    more cores than jobs still uses them all."""
    return max(1, cpus // max(1, jobs))


def first_error(log: Path, offset: int = 0) -> str | None:
    """The line that says why a worker failed, from byte `offset` of its log: the first
    `error: ...` line (a user error), else the exception line that ends a traceback, else the
    last line."""
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            lines = [ln.rstrip() for ln in f.read().decode(errors="replace").splitlines()]
    except FileNotFoundError:
        return None
    lines = [ln for ln in lines if ln.strip()]
    for ln in lines:
        if ln.startswith("error: "):
            return ln.removeprefix("error: ")
    if any(ln.startswith("Traceback") for ln in lines):
        raised = [ln for ln in lines if not ln[0].isspace() and not ln.startswith("Traceback")]
        if raised:
            return raised[-1]
    return lines[-1] if lines else None


@dataclass
class SweepReport:
    finished: list[str]
    failed: dict[str, str]
    seconds: float


def run_sweep(
    runs: list[RunSpec],
    store: Path,
    *,
    jobs: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    desc: str = "sweep",
) -> SweepReport:
    """Run every unfinished run of `runs`, `jobs` at a time (default: one per core), each with
    `threads` torch threads (default: `threads_per_worker`); return which finished or failed.

    A failed run (its log is `<run dir>/worker.log`) does not stop the others, but its
    branches are skipped.
    """
    store = store.resolve()
    store.mkdir(parents=True, exist_ok=True)
    by_key = {r.key: r for r in runs}
    done = {r.key for r in runs if is_finished(run_dir(store, r))}
    failed: dict[str, str] = {}
    pending = [r for r in runs if r.key not in done]
    jobs = jobs or min(len(pending), usable_cpus()) or 1
    threads = threads or threads_per_worker(jobs, usable_cpus())
    running: dict[str, subprocess.Popen[bytes]] = {}
    log_start: dict[str, int] = {}
    total = sum(r.rounds for r in runs)
    started = time.time()
    # rounds that interrupted runs had already logged, so that resuming does not count as speed
    earlier = {r.key: min(rounds_done(run_dir(store, r)), r.rounds) for r in pending}

    def count() -> int:
        n = sum(by_key[k].rounds for k in done)
        n += sum(earlier[r.key] for r in pending)
        return n + sum(
            min(rounds_done(run_dir(store, by_key[k])), by_key[k].rounds) for k in running
        )

    bar = tqdm(
        total=total,
        initial=count(),
        disable=not progress,
        unit="round",
        desc=desc,
        file=sys.stderr,
        smoothing=0.05,
    )
    previous = _interrupt_on_sigterm()
    try:
        while pending or running:
            for r in list(pending):
                if len(running) >= jobs:
                    break
                if r.parent is not None and r.parent in failed:
                    failed[r.key] = f"its warm-up {by_key[r.parent].dir_name()} failed"
                    pending.remove(r)
                    continue
                if r.parent is not None and r.parent not in done:
                    continue
                log = run_dir(store, r) / "worker.log"
                log_start[r.key] = log.stat().st_size if log.is_file() else 0
                running[r.key] = _launch(store, r, by_key, threads)
                pending.remove(r)
            if not running and pending:
                raise FlwbcError("sweep stuck: runs wait for warm-ups that are not in the sweep")
            time.sleep(0.5)
            for key, proc in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[key]
                path = run_dir(store, by_key[key])
                if proc.returncode == 0 and is_finished(path):
                    done.add(key)
                else:
                    log = path / "worker.log"
                    why = first_error(log, log_start[key]) or "no output"
                    failed[key] = f"{why} (exit {proc.returncode}; log: {log})"
            bar.n = count()
            bar.set_postfix_str(
                f"runs {len(done)}/{len(runs)}" + (f", failed {len(failed)}" if failed else ""),
                refresh=False,
            )
            bar.refresh()
    except KeyboardInterrupt:
        # workers stop at once; each resumes from its last finished round
        for proc in running.values():
            proc.terminate()
        for proc in running.values():
            proc.wait()
        raise
    finally:
        bar.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return SweepReport(
        finished=[k for k in by_key if k in done], failed=failed, seconds=time.time() - started
    )


def _launch(
    store: Path, run: RunSpec, by_key: dict[str, RunSpec], threads: int
) -> subprocess.Popen[bytes]:
    path = run_dir(store, run)
    path.mkdir(parents=True, exist_ok=True)
    extra: dict[str, object] = {
        "output": {"dir": str(store), "name": run.dir_name(), "checkpoint_every": 1},
        "threads": threads,
    }
    if run.parent is not None:
        extra["init_model"] = str(run_dir(store, by_key[run.parent]) / "model.safetensors")
    request = {
        "key": run.key,
        "role": run.role,
        "coords": run.coords,
        "config": deep_merge(run.config, extra),
    }
    atomic_write_json(path / REQUEST, request)
    log = open(path / "worker.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "flwbc.experiments.worker", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
    finally:
        log.close()

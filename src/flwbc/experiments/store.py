"""The run store of a sweep: where each run lives, when it counts as finished, and what a run
is asked to do; shared by every sweep backend, so that a store written by one is continued by
another.

Each run lives in `<store>/<label>--<key>`. A run is finished when its `summary.json` says
complete and its `model.safetensors` exists, or, for a run restored from an archive of records
without its model, `records-only.json` does (`flwbc.experiments.pack`). Every file is written
atomically, and a backend that copies a run's files into the store writes `summary.json` last,
so a half-written result is never taken for a finished one.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

from flwbc.errors import FlwbcError
from flwbc.experiments.specs import RunSpec, deep_merge
from flwbc.runio import RECORDS_ONLY, read_json

REQUEST = "request.json"
WALL = "wall.json"
"""A finished run's wall time as its sweep saw it (`flwbc.experiments.sweep`)."""
LOCK = ".lock"
"""Held (flock) by whoever runs the run: a local worker process, or the driver of a Ray sweep
while a task runs it; so no two sweeps run one run at once."""


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
    if not summary.is_file():
        return False
    if not (path / "model.safetensors").is_file() and not (path / RECORDS_ONLY).is_file():
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


def run_request(
    store: Path,
    run: RunSpec,
    by_key: dict[str, RunSpec],
    *,
    threads: int,
    device: str | None = None,
) -> dict[str, Any]:
    """What a backend asks a worker to run: the run's identity and its config, completed with
    where it writes (the store, checkpointing every round so that it resumes from its last
    round), its torch threads, its device (None: the spec's) and, for a branch, its warm-up's
    model to start from. The same for every backend, so a run's `config.json` does not depend
    on where it ran."""
    extra: dict[str, Any] = {
        "output": {"dir": str(store), "name": run.dir_name(), "checkpoint_every": 1},
        "threads": threads,
    }
    if device is not None:
        extra["device"] = device
    if run.parent is not None:
        extra["init_model"] = str(run_dir(store, by_key[run.parent]) / "model.safetensors")
    return {
        "key": run.key,
        "role": run.role,
        "coords": run.coords,
        "config": deep_merge(run.config, extra),
    }


def lock_run(path: Path) -> int | None:
    """Take the run directory's lock (`.lock`); its file descriptor, or None when another
    process holds it. Closing the descriptor (or ending the process) releases it."""
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_stale_temp_files(path: Path) -> None:
    """Remove the temporary files that a kill during an atomic write left in `path` (call it
    holding the run's lock)."""
    for stale in path.glob(".*.tmp"):
        stale.unlink(missing_ok=True)

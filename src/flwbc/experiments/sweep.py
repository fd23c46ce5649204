"""Run a sweep's runs in parallel, resumably, on a backend: worker processes on this machine
(`local`, the default) or tasks on a Ray cluster (`ray`, `flwbc.experiments.ray_backend`).

Each run lives in `<store>/<label>--<key>` (`flwbc.experiments.store`); finished runs are never
redone. A run that was interrupted (Ctrl-C, SIGKILL, power loss, a node that died) continues
from its last per-round checkpoint, and since every random stream is keyed by (seed, round,
client) the result is the same as an uninterrupted run. Every file is written atomically, so a
kill at any moment leaves no half-written result; a store written by one backend is continued
by the other.

Branches start from their warm-up's saved model, so they wait for it; everything else runs in
the order given, as many at a time as the backend takes (`jobs`). One progress bar counts the
rounds of the whole sweep. Each run that ends here leaves `wall.json` in its directory: the
seconds from its start to its end as the sweep saw them (process start, data loading and
writing included), to set against the compute its `timings.jsonl` records.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from tqdm.auto import tqdm

from flwbc.errors import FlwbcError
from flwbc.experiments import BACKENDS
from flwbc.experiments.local_backend import LocalBackend, first_error, threads_per_worker
from flwbc.experiments.specs import RunSpec
from flwbc.experiments.store import (
    REQUEST,
    WALL,
    is_finished,
    rounds_done,
    run_dir,
    run_request,
)
from flwbc.runio import atomic_write_json
from flwbc.runtime import stop_on_sigterm, usable_cpus

if TYPE_CHECKING:
    from flwbc.experiments.ray_backend import RayOptions

__all__ = [
    "BACKENDS",
    "WALL",
    "REQUEST",
    "SweepBackend",
    "SweepReport",
    "first_error",
    "is_finished",
    "rounds_done",
    "run_dir",
    "run_sweep",
    "threads_per_worker",
]


class SweepBackend(Protocol):
    """Where a sweep's runs execute. The sweep decides what runs when; a backend starts runs,
    reports which ended, and leaves each finished run's files in the store."""

    name: str
    slots: int | None
    """Runs at once (None: as many as are ready; the backend queues them)."""

    def start(self, key: str, path: Path, request: dict[str, Any]) -> None:
        """Start the run `key` whose directory is `path` (`store.run_request`'s request)."""

    def poll(self, timeout: float) -> dict[str, str | None]:
        """Wait up to `timeout` seconds; the runs that ended since: None when finished (its
        files in the store), else why it failed."""
        ...

    def stop(self) -> None:
        """Interrupted: end every run at once (each resumes from its last saved round)."""

    def close(self) -> None:
        """Release what the backend holds (called once, at the end)."""


@dataclass
class SweepReport:
    finished: list[str]
    failed: dict[str, str]
    seconds: float


def check_device(device: str | None, backend: str) -> None:
    """Refuse a device torch does not know, and CUDA on a local sweep without a GPU (a Ray
    sweep's GPUs are on its nodes, not necessarily here)."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise FlwbcError(f"unknown device '{device}': {str(err).splitlines()[0]}") from None
    if dev.type == "cuda" and backend == "local" and not torch.cuda.is_available():
        raise FlwbcError(f"--device {device}: torch sees no CUDA device on this machine")


def run_sweep(
    runs: list[RunSpec],
    store: Path,
    *,
    jobs: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    desc: str = "sweep",
    backend: Literal["local", "ray"] = "local",
    device: str | None = None,
    ray_options: RayOptions | None = None,
    on_progress: Callable[[], None] | None = None,
    progress_every: float = 60.0,
) -> SweepReport:
    """Run every unfinished run of `runs` and return which finished or failed.

    `on_progress` is called after runs have finished, at most once every `progress_every`
    seconds (a caller writes its partial tables there, so an interrupted sweep leaves them).

    `backend="local"`: `jobs` worker processes at a time (default: one per core), each with
    `threads` torch threads (default: `threads_per_worker`). `backend="ray"`: one Ray task per
    run on the cluster of `ray_options` (`flwbc.experiments.ray_backend`), at most `jobs` at a
    time (default: as many as the cluster's resources allow), each with `threads` torch threads
    (default: its CPUs rounded up). `device` (e.g. `cuda`) overrides every run's config; it is
    not part of a run's identity.

    A failed run (its log is `<run dir>/worker.log`) does not stop the others, but its
    branches are skipped.
    """
    if backend not in BACKENDS:
        raise FlwbcError(f"unknown sweep backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    check_device(device, backend)
    store = store.resolve()
    store.mkdir(parents=True, exist_ok=True)
    by_key = {r.key: r for r in runs}
    done = {r.key for r in runs if is_finished(run_dir(store, r))}
    failed: dict[str, str] = {}
    pending = [r for r in runs if r.key not in done]
    runner: SweepBackend | None = None
    if backend == "ray":
        from flwbc.experiments.ray_backend import RayBackend, RayOptions

        opts = ray_options or RayOptions()
        threads = threads or max(1, math.ceil(opts.cpus_per_run))
        if pending:  # a finished sweep does not even connect to the cluster
            runner = RayBackend(opts, slots=jobs, runs=pending, device=device)
    else:
        jobs = jobs or min(len(pending), usable_cpus()) or 1
        threads = threads or threads_per_worker(jobs, usable_cpus())
        runner = LocalBackend(jobs)
    running: set[str] = set()
    began: dict[str, float] = {}
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
    with stop_on_sigterm():  # SIGTERM stops the runs as Ctrl-C does
        shown = told = time.monotonic()
        untold = 0
        try:
            while pending or running:
                assert runner is not None
                for r in list(pending):
                    if runner.slots is not None and len(running) >= runner.slots:
                        break
                    if r.parent is not None and r.parent in failed:
                        failed[r.key] = f"its warm-up {by_key[r.parent].dir_name()} failed"
                        pending.remove(r)
                        continue
                    if r.parent is not None and r.parent not in done:
                        continue
                    request = run_request(store, r, by_key, threads=threads, device=device)
                    began[r.key] = time.monotonic()
                    runner.start(r.key, run_dir(store, r), request)
                    running.add(r.key)
                    pending.remove(r)
                if not running and pending:
                    raise FlwbcError(
                        "sweep stuck: runs wait for warm-ups that are not in the sweep"
                    )
                ended = runner.poll(0.5)
                for key, why in ended.items():
                    running.discard(key)
                    if why is None:
                        done.add(key)
                        wall = {
                            "seconds": time.monotonic() - began[key],
                            "backend": backend,
                            "jobs": jobs,
                            "from_round": earlier[key],
                        }
                        atomic_write_json(run_dir(store, by_key[key]) / WALL, wall)
                    else:
                        failed[key] = why
                untold += sum(why is None for why in ended.values())
                if on_progress and untold and time.monotonic() - told >= progress_every:
                    try:
                        on_progress()
                    except (FlwbcError, OSError) as err:  # a table, never worth the sweep
                        print(f"flwbc: partial tables not written: {err}", file=sys.stderr)
                    told, untold = time.monotonic(), 0
                if not ended and time.monotonic() - shown < 0.5:
                    continue  # a backend that returns at every round: the bar twice a second
                shown = time.monotonic()
                bar.n = count()
                bar.set_postfix_str(
                    f"runs {len(done)}/{len(runs)}" + (f", failed {len(failed)}" if failed else ""),
                    refresh=False,
                )
                bar.refresh()
        except KeyboardInterrupt:
            # runs stop at once; each resumes from its last finished round
            if runner is not None:
                runner.stop()
            raise
        finally:
            bar.close()
            if runner is not None:
                runner.close()
    return SweepReport(
        finished=[k for k in by_key if k in done], failed=failed, seconds=time.time() - started
    )

"""The Ray sweep backend's cost against the local one, per run, on a sweep of short runs.

The same sweep (N independent runs of R rounds on a tiny Fashion-MNIST setting: an MLP, 20
clients, 4 a round, a tenth of the data) runs on:
- local: the local backend, one worker process per run, one torch thread each;
- ray: the Ray backend as `--backend ray` without `--address` runs it, a Ray instance of this
  machine's cores started for the sweep and stopped after it (start-up included);
- ray, warm: the Ray backend on a Ray instance already running, whose worker processes have
  run a sweep before (the steady state of a long sweep, or of a cluster).
Each with `--jobs` runs at once (default: one per core; Ray with `--cpus-per-run 1`), in a
fresh store, interleaved, `--reps` times. It prints the median wall time of each, the overhead
per run against local ((wall - local wall) / N) and the ratio, and whether every run's
rounds.jsonl is the local backend's, byte for byte. The last column is the time per run not
spent in the run's own rounds: the wall time times the runs at once over N, minus the runs'
mean `seconds_this_session` (starting a worker process, imports, loading the data; shipping
and writing the files).

On a GPU machine, `--device cuda --gpus-per-run 0.25` puts every run on the GPU (the local
backend's `--jobs` at once, Ray's four per GPU); the Ray instance gets the machine's cores as
CPUs, so keep `--jobs` within the cores and 4 x GPUs. Results on a GPU are compared between
the backends, not with the CPU's.

usage: python benchmarks/bench_ray.py [--runs 8] [--rounds 2] [--reps 3] [--data-dir DIR]
       [--device cuda --gpus-per-run 0.25 --jobs 4]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from flwbc.experiments.ray_backend import RayOptions, require_ray
from flwbc.experiments.specs import RunSpec, run_key
from flwbc.experiments.sweep import run_dir, run_sweep
from flwbc.runtime import usable_cpus


def tiny_runs(n: int, rounds: int, data_dir: str | None) -> list[RunSpec]:
    """`n` independent short runs (seeds 0..n-1) of one tiny setting."""
    runs = []
    for seed in range(n):
        cfg: dict[str, Any] = {
            "seed": seed,
            "model": "mlp",
            "data": {"name": "fmnist", "dir": data_dir, "train_fraction": 0.1},
            "federation": {"num_clients": 20, "clients_per_round": 4, "rounds": rounds},
            "local": {"epochs": 1, "batch_size": 32},
            "attack": {"num_malicious": 2, "num_images": 1, "rounds": [1], "epochs": 1},
            "eval": {"batch_size": 2000},
        }
        runs.append(RunSpec(run_key(cfg, None), f"bench-s{seed}", cfg, rounds=rounds))
    return runs


def outside(runs: list[RunSpec], store: Path, wall: float, jobs: int) -> float:
    """Seconds per run not spent in the runs' own rounds (their `seconds_this_session`):
    starting a worker, imports, loading the data, shipping and writing files, waiting."""
    own = [json.loads((run_dir(store, r) / "summary.json").read_text()) for r in runs]
    return wall * jobs / len(runs) - statistics.mean(s["seconds_this_session"] for s in own)


def timed(
    runs: list[RunSpec], store: Path, backend: str, jobs: int, args: argparse.Namespace
) -> float:
    t0 = time.perf_counter()
    report = run_sweep(
        runs,
        store,
        jobs=jobs,
        threads=1,
        progress=False,
        backend=backend,  # type: ignore[arg-type]
        device=args.device,
        ray_options=RayOptions(cpus_per_run=1, gpus_per_run=args.gpus_per_run),
    )
    seconds = time.perf_counter() - t0
    if report.failed:
        raise SystemExit(f"{backend}: runs failed: {report.failed}")
    return seconds


def same_records(runs: list[RunSpec], a: Path, b: Path) -> bool:
    return all(
        (run_dir(a, r) / "rounds.jsonl").read_bytes()
        == (run_dir(b, r) / "rounds.jsonl").read_bytes()
        for r in runs
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default=None, help="e.g. cuda: every run on the GPU")
    ap.add_argument(
        "--gpus-per-run", type=float, default=0.0, help="the Ray runs' share of a GPU, e.g. 0.25"
    )
    ap.add_argument("--jobs", type=int, default=None, help="runs at once (default: one per core)")
    args = ap.parse_args()
    ray = require_ray()
    jobs = args.jobs or usable_cpus()
    runs = tiny_runs(args.runs, args.rounds, args.data_dir)
    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    walls: dict[str, list[float]] = {"local": [], "ray": [], "ray, warm": []}
    extra: dict[str, list[float]] = {name: [] for name in walls}
    identical = True
    try:
        for rep in range(args.reps):
            stores = {name: root / f"{i}-{rep}" for i, name in enumerate(walls)}
            walls["local"].append(timed(runs, stores["local"], "local", jobs, args))
            walls["ray"].append(timed(runs, stores["ray"], "ray", jobs, args))
            ray.init(num_cpus=usable_cpus(), include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)  # fmt: skip
            try:
                # the same sweep once before, so that the worker processes are up
                timed(runs, root / f"warm-up-{rep}", "ray", jobs, args)
                walls["ray, warm"].append(timed(runs, stores["ray, warm"], "ray", jobs, args))
            finally:
                ray.shutdown()
            for name, store in stores.items():
                extra[name].append(outside(runs, store, walls[name][-1], jobs))
                identical &= same_records(runs, stores["local"], store)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = statistics.median(walls["local"])
    print(
        f"{args.runs} runs of {args.rounds} rounds, {jobs} at a time, 1 torch thread each"
        f"{', on ' + args.device if args.device else ''}, median of {args.reps}; "
        f"rounds.jsonl identical to local: {identical}"
    )
    print(
        "| backend | wall s (median) | all reps | overhead per run vs local, s | ratio to local "
        "| per run outside its rounds, s |"
    )
    print("|---|---|---|---|---|---|")
    for name, values in walls.items():
        med = statistics.median(values)
        reps = ", ".join(f"{v:.1f}" for v in values)
        print(
            f"| {name} | {med:.1f} | {reps} | {(med - base) / args.runs:+.2f} | {med / base:.2f} "
            f"| {statistics.median(extra[name]):.2f} |"
        )


if __name__ == "__main__":
    main()

"""Torch threads on a machine that is idle and on one that other jobs keep busy.

Each variant is a whole `flwbc run` (2 rounds on a tenth of Fashion-MNIST, the default model
and batch size) in its own process; its seconds per round (training and evaluation) are read
from its `timings.jsonl`. The variants run interleaved, `--repeats` times each, first on the idle
machine, then with `--load` busy processes (pure Python loops, as another user's jobs) on the
cores. Prints one JSON line per variant and condition: median, min and max seconds per round.

    python benchmarks/bench_threads.py --data-dir DATA [--repeats 3] [--load 2]

Variants: `--threads 1`; `--threads 2` with OpenMP's threads spinning while they wait for
work (`OMP_WAIT_POLICY=ACTIVE`, what a spinning runtime does), which is what collapses a run
whose threads share cores with other busy processes; `--threads 2` with them sleeping
(`OMP_WAIT_POLICY=PASSIVE`); and flwbc's default (no flag, the environment's wait policy
unset).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS: dict[str, tuple[list[str], dict[str, str]]] = {
    "threads 1": (["--threads", "1"], {}),
    "threads 2": (["--threads", "2"], {"OMP_WAIT_POLICY": "ACTIVE"}),
    "threads 2, passive wait": (["--threads", "2"], {"OMP_WAIT_POLICY": "PASSIVE"}),
    "default": ([], {}),
}


def _busy() -> None:
    while True:
        pass


def _one(variant: str, data_dir: str, out: Path, name: str) -> float:
    flags, extra = VARIANTS[variant]
    cmd = [
        str(Path(sys.executable).with_name("flwbc")), "run", "--no-progress",
        "--data-dir", data_dir,
        "--rounds", "2", "--data-train-fraction", "0.1", "--attack-prob", "0",
        "--out", str(out), "--name", name, *flags,
    ]  # fmt: skip
    drop = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")
    env = {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    rows = [json.loads(x) for x in (out / name / "timings.jsonl").read_text().splitlines()]
    return statistics.mean(float(r["seconds"]) for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--load", type=int, default=2, help="busy processes in the loaded condition")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for condition, load in (("idle", 0), (f"{args.load} busy processes", args.load)):
            hogs = [mp.Process(target=_busy, daemon=True) for _ in range(load)]
            for h in hogs:
                h.start()
            try:
                times: dict[str, list[float]] = {v: [] for v in VARIANTS}
                for i in range(args.repeats):
                    order = list(VARIANTS) if i % 2 == 0 else list(reversed(VARIANTS))
                    for v in order:
                        out = Path(tmp) / f"{condition}-{i}".replace(" ", "_")
                        name = v.replace(" ", "_").replace(",", "")
                        times[v].append(_one(v, args.data_dir, out, name))
            finally:
                for h in hogs:
                    h.terminate()
            for v, ts in times.items():
                print(json.dumps({
                    "condition": condition,
                    "variant": v,
                    "seconds_per_round": {
                        "median": round(statistics.median(ts), 2),
                        "min": round(min(ts), 2),
                        "max": round(max(ts), 2),
                    },
                    "cpus": os.cpu_count(),
                }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

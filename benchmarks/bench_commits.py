"""Time the same runs on two commits of flwbc, side by side, and check they give the same numbers.

Checks that a change does not slow (or alter) runs that do not use what it adds: each
workload runs as `flwbc run` in a fresh process on the working tree and on a git worktree of
`--base`, interleaved (A B A B ...) so that a passing foreign load hits both. It prints the
median wall-clock seconds per workload, the ratio working tree / base, and whether the two
`rounds.jsonl` files are identical.

usage: python benchmarks/bench_commits.py --base REV [--reps 3] [--rounds 3] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKLOADS = {
    "fedavg": [],
    "wbc-eq3": [
        "--set",
        "defense.client=wbc",
        "--set",
        "attack.rounds=[1]",
        "--set",
        "attack.num_malicious=2",
    ],
    "median-eq3": [
        "--set",
        "server.aggregator=median",
        "--set",
        "attack.rounds=[2]",
        "--set",
        "attack.num_malicious=2",
    ],
}


def _run(src: Path, args: list[str], out: Path, name: str, common: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-c", "from flwbc.cli import main; raise SystemExit(main())"]
    cmd += ["run", *common, *args]
    cmd += ["--set", f"output.dir={out}", "--set", f"output.name={name}", "--no-progress"]
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="the commit to compare the working tree with")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data-dir", default=os.environ.get("FLWBC_DATA_DIR"))
    args = p.parse_args()
    common = [
        "--set",
        f"federation.rounds={args.rounds}",
        "--set",
        "local.epochs=1",
        "--set",
        "local.batch_size=32",
        "--set",
        "threads=1",
    ]
    if args.data_dir:
        common += ["--set", f"data.dir={args.data_dir}"]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base],
            check=True,
            capture_output=True,
        )
        try:
            trees = {"base": base / "src", "head": ROOT / "src"}
            print(f"base {args.base}, {args.reps} reps of {args.rounds} rounds, one thread")
            print(f"{'workload':<12} {'base s':>8} {'head s':>8} {'ratio':>6}  same numbers")
            for label, extra in WORKLOADS.items():
                times: dict[str, list[float]] = {"base": [], "head": []}
                for rep in range(args.reps):
                    for tree, src in trees.items():
                        out = Path(tmp) / "runs" / tree
                        times[tree].append(_run(src, extra, out, f"{label}-{rep}", common))
                a, b = (statistics.median(times[k]) for k in ("base", "head"))
                same = all(
                    (Path(tmp) / "runs" / "base" / f"{label}-{r}" / "rounds.jsonl").read_bytes()
                    == (Path(tmp) / "runs" / "head" / f"{label}-{r}" / "rounds.jsonl").read_bytes()
                    for r in range(args.reps)
                )
                print(f"{label:<12} {a:8.2f} {b:8.2f} {b / a:6.2f}  {same}")
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False
            )


if __name__ == "__main__":
    main()

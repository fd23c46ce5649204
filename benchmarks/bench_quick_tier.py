"""The quick tier of `flwbc bench evaluate`: one defense from a plug-in package outside flwbc,
placed on a stored leaderboard with one command, timed from an empty run store.

The package (written to a temporary folder and put on PYTHONPATH, as a user's own would be)
registers the plug-in tests' coordinate-wise clipped mean (tests/plugins/conftest.py); the
command is what docs/bench.md gives a user:

    flwbc bench evaluate --quick --plugins qtplug --name "clipped mean" --against BOARD \\
        --defense "{server: {aggregator: coord_clip_mean, options: {c: 0.05}}}"

It runs the spec's quick settings for that defense alone (every attack and the clean cell,
the targeted regime's warm-up included), then writes its report card against BOARD's cells.
Prints one JSON line: wall seconds, the runs' own compute, runs finished, exit status. The
issue's bar is 30 minutes on 2 cores; run it with nothing else on the cores.

    python benchmarks/bench_quick_tier.py --data-dir DATA --against results/leaderboard
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from flwbc.experiments.results import timing_seconds

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.plugins.conftest import AGGREGATOR as PLUGIN  # noqa: E402 - the tests' plug-in


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--against", required=True, help="a stored board (its cells.csv)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "site" / "qtplug").mkdir(parents=True)
        (root / "site" / "qtplug" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
        env = {**os.environ, "PYTHONPATH": str(root / "site"), "FLWBC_DATA_DIR": args.data_dir}
        cmd = [
            sys.executable, "-m", "flwbc.cli", "bench", "evaluate", "--quick",
            "--defense", "{server: {aggregator: coord_clip_mean, options: {c: 0.05}}}",
            "--plugins", "qtplug", "--name", "clipped mean", "--against", args.against,
            "--runs", str(root / "store"), "--out", str(root / "out"), "--no-progress",
        ]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        cells = root / "out" / "cells.csv"
        rows = cells.read_text().splitlines() if cells.is_file() else []
        mine = [r for r in rows if ",clipped mean," in r]
        store = root / "store"
        runs = list(store.iterdir()) if store.is_dir() else []
        compute = sum(timing_seconds(d) for d in runs)
        print(
            json.dumps(
                {
                    "wall_s": round(wall, 1),
                    "compute_s": round(compute, 1),
                    "runs": len(runs),
                    "cells": len(mine),
                    "cores": os.cpu_count(),
                    "exit": done.returncode,
                    "last_line": done.stderr.strip().splitlines()[-1:],
                }
            )
        )
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())

"""`flwbc order-stats`: where the attackers' values fall among the benign ones, per coordinate."""

from __future__ import annotations

import argparse
from typing import Any

from flwbc.errors import FlwbcError

NAME = "order-stats"
ORDER = 11
RESUMES: str | None = None
"""What an interruption leaves: 'run' (continue with --resume), 'sweep' (rerun the command)."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        NAME,
        help="where attackers' values fall among the benign clients' in each coordinate",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Replay each run along its own trajectory; in every round, for a sample of "
        "coordinates, measure how often an attacker's value is one the coordinate-wise median "
        "takes (against the chance if all values were exchangeable), the attackers' quantiles "
        "among the benign values, and the benign spread. Writes order_stats.jsonl and "
        "order_stats.json into each run directory. Cost: about the run's own.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories to replay")
    p.add_argument("--rounds", type=int, default=None, help="only the first N rounds")
    p.add_argument("--coords", type=int, default=1000, help="coordinates sampled per round")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def command(args: argparse.Namespace, argv: list[str] | None) -> int:
    from flwbc.analysis.order_stats import order_statistics_run

    if args.rounds is not None and args.rounds < 1:
        raise FlwbcError(f"--rounds must be positive, got {args.rounds}")
    if args.coords < 1:
        raise FlwbcError(f"--coords must be positive, got {args.coords}")
    print("| run | rounds attacked | attacker in the middle | if exchangeable | quantile |")
    print("|---|---|---|---|---|")
    for run_dir in args.run_dirs:
        path, s = order_statistics_run(
            run_dir, rounds=args.rounds, coords=args.coords, progress=not args.no_progress
        )
        if s["attacker_in_middle"] is None:
            print(f"| {run_dir} | 0 | | | |")
            continue
        print(
            f"| {run_dir} | {s['rounds_with_attackers']} | {s['attacker_in_middle']:.3f} | "
            f"{s['attacker_in_middle_null']:.3f} | {s['attacker_quantile_mean']:.3f} |"
        )
    return 0

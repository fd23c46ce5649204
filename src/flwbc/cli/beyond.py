"""`flwbc beyond`: results/beyond/BEYOND.md from the run store of the specs beside it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flwbc.errors import FlwbcError

NAME = "beyond"
ORDER = 12
RESUMES: str | None = None
"""What an interruption leaves: 'run' (continue with --resume), 'sweep' (rerun the command)."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        NAME,
        help="write BEYOND.md: the client-side defenses' claims tested beyond their papers",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Read the runs of the specs in --specs (composition, adaptive, "
        "adaptive-leadfl, lockdown and the three leadfl-template .yaml, each "
        "run with `flwbc bench run SPEC --runs RUNS`) "
        "from the store RUNS, with the order "
        "statistics `flwbc order-stats` wrote into their run directories, and write BEYOND.md: "
        "each claim quoted with its source, the measured values over seeds with 95% intervals, "
        "a verdict and the command. Runs nothing; unfinished runs show as empty cells.",
    )
    p.add_argument("runs", metavar="RUNS", help="the run store of the specs")
    p.add_argument("--specs", default="results/beyond", help="folder holding the specs")
    p.add_argument("--out", default=None, help="the file written (default: SPECS/BEYOND.md)")


def command(args: argparse.Namespace, argv: list[str] | None) -> int:
    from flwbc.experiments.beyond import write_beyond

    store, specs = Path(args.runs), Path(args.specs)
    if not store.is_dir():
        raise FlwbcError(f"no run store at {store}")
    if not specs.is_dir():
        raise FlwbcError(f"no specs folder at {specs}")
    out = Path(args.out) if args.out else specs / "BEYOND.md"
    for path in write_beyond(specs, store, out):
        print(f"wrote {path}")
    return 0

"""`flwbc reproduce`: the paper's figures and tables, with a REPORT.md."""

from __future__ import annotations

import argparse
from typing import Any

from flwbc.cli.common import (
    add_backend_args,
    add_data_dir_arg,
    check_workers,
    sweep_backend,
    sweep_places,
    sweep_status,
)
from flwbc.errors import FlwbcError

NAME = "reproduce"
ORDER = 8
RESUMES: str | None = "sweep"
"""What an interruption leaves: 'run' (continue with --resume), 'sweep' (rerun the command)."""


def add_parser(sub: Any) -> None:
    rep = sub.add_parser(
        "reproduce",
        help="reproduce the paper's figures and tables, with a REPORT.md",
        description="Run the paper's results from their specs (resumable: rerun the same "
        "command to continue), then write figures, tables and REPORT.md into --out. Runs go "
        "to the run store (--runs), outputs beside it (RUNS/results); a REPORT.md that covers "
        "more finished runs is never replaced without --overwrite. Time on 2 cores: --quick a "
        "few minutes; fig2 about 41 min of compute, fig3 8 h, fig4 9.5 h, fig5 10 h, table1 4 h, "
        "fig6 5 h; all: 29 h of compute, 15 h of wall clock with two workers. Exit status: 0 "
        "when every run finished, 1 when any failed (each printed with its error and log), 2 "
        "on bad input, 130 when interrupted (Ctrl-C), 143 when stopped by SIGTERM.",
    )
    rep.add_argument(
        "results",
        nargs="+",
        metavar="RESULT",
        help="fig2, fig3, fig4, fig5, table1, fig6, all, or a spec file (.yaml)",
    )
    rep.add_argument(
        "--quick",
        action="store_true",
        help="a few rounds on one setting and seed: minutes, for smoke tests",
    )
    rep.add_argument(
        "--out",
        default=None,
        help="where figures, tables and REPORT.md go (default: RUNS/results)",
    )
    rep.add_argument(
        "--runs", default=None, help="run store (default runs/reproduce, or runs/reproduce-quick)"
    )
    rep.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a REPORT.md in --out even when it covers more finished runs",
    )
    rep.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs in parallel (default: the number of cores; --backend ray: as many as the "
        "cluster's resources take)",
    )
    rep.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per run (default: the cores shared out among the jobs, at least 1)",
    )
    rep.add_argument("--seeds", default=None, help="comma-separated seeds instead of the spec's")
    add_data_dir_arg(rep)
    rep.add_argument(
        "--no-run",
        action="store_true",
        help="only rewrite figures, tables and the report from finished runs",
    )
    rep.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_backend_args(rep)


def command(args: argparse.Namespace, argv: list[str] | None) -> int:
    from flwbc.experiments.reproduce import reproduce

    check_workers(args)
    seeds = None
    if args.seeds:
        try:
            seeds = [int(s) for s in args.seeds.split(",")]
        except ValueError:
            raise FlwbcError(f"--seeds takes comma-separated integers: {args.seeds!r}") from None
    store, out, command = sweep_places(args, argv, "reproduce")
    sweep, report_path = reproduce(
        args.results,
        out=out,
        store=store,
        quick=args.quick,
        jobs=args.jobs,
        threads=args.threads,
        seeds=seeds,
        data_dir=args.data_dir,
        run=not args.no_run,
        progress=not args.no_progress,
        command=command,
        overwrite=args.overwrite,
        **sweep_backend(args),
    )
    print(report_path)
    return sweep_status(sweep)

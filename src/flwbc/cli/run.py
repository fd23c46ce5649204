"""`flwbc run`: one experiment from a config file and/or flags."""

from __future__ import annotations

import argparse
from typing import Any

from flwbc.cli.common import add_config_args, config_from_args
from flwbc.cli.summary import print_summary
from flwbc.errors import FlwbcError

NAME = "run"
ORDER = 0
RESUMES: str | None = "run"
"""What an interruption leaves: 'run' (continue with --resume), 'sweep' (rerun the command)."""


def add_parser(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run one experiment",
        description="Run one federated experiment and write its run directory. `flwbc list` "
        "shows every plug-in to choose from (attacks, schedules, client defenses, pre- and "
        "post-aggregation steps, aggregators, metrics, datasets, partitions, engines, models), "
        "with its options; the choices listed below are the built-in ones and those of entry "
        "points.",
    )
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_args(run)


def command(args: argparse.Namespace, argv: list[str] | None) -> int:
    from flwbc.api import run

    if args.resume:
        given = [
            k[4:]
            for k, v in vars(args).items()
            if k.startswith("cfg:") and v is not None and k != "cfg:threads"
        ]
        if given or args.config or args.set:
            raise FlwbcError(
                "--resume continues a run exactly as it was configured; drop "
                + ", ".join(
                    given + (["--config"] if args.config else []) + (["--set"] if args.set else [])
                )
            )
        raw = getattr(args, "cfg:threads", None)
        if raw is not None and (not raw.isdigit() or int(raw) < 1):
            raise FlwbcError(f"--threads must be an integer >= 1, got '{raw}'")
        result = run(
            resume=args.resume,
            progress=not args.no_progress,
            threads=None if raw is None else int(raw),
            announce=True,
        )
    else:
        result = run(config_from_args(args), progress=not args.no_progress)
    print_summary(result.run_dir, result.summary)
    return 0

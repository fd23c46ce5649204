"""`flwbc flower`: helpers for a real Flower deployment (partitions, app directory)."""

from __future__ import annotations

import argparse
from typing import Any

from flwbc.cli.common import add_config_args, config_from_args

NAME = "flower"
ORDER = 1
RESUMES: str | None = None
"""What an interruption leaves: 'run' (continue with --resume), 'sweep' (rerun the command)."""


def add_parser(sub: Any) -> None:
    flower = sub.add_parser(
        "flower",
        help="Flower deployment helpers (needs the [flower] extra)",
        description="Prepare a real Flower deployment of an experiment "
        "(docs/flower-deployment.md).",
    )
    fsub = flower.add_subparsers(dest="flower_command", required=True)
    parts = fsub.add_parser(
        "partitions",
        help="write one data file per client, for the SuperNodes",
        description="Write DIR/client-<c>.safetensors for every client of the experiment; "
        "start SuperNode c with --node-config "
        "'partition-id=c partition-file=DIR/client-<c>.safetensors'.",
    )
    parts.add_argument("dir", metavar="DIR", help="folder for the partition files")
    add_config_args(parts)
    fapp = fsub.add_parser(
        "app",
        help="write a Flower app directory for 'flwr run'",
        description="Write DIR/pyproject.toml: a Flower app whose ServerApp and ClientApp are "
        "flwbc's (installed in the environment, so the app holds no code).",
    )
    fapp.add_argument("dir", metavar="DIR", help="folder for the app's pyproject.toml")


def command(args: argparse.Namespace, argv: list[str] | None) -> int:
    from flwbc.flower import require_flwr

    require_flwr()
    if args.flower_command == "partitions":
        from flwbc.flower.partitions import export_partitions

        paths = export_partitions(config_from_args(args), args.dir)
        print(f"wrote {len(paths)} partition files to {args.dir}")
    else:
        from flwbc.flower.appdir import write_app

        print(write_app(args.dir))
    return 0

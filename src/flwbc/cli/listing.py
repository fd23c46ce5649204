"""`flwbc list`: every registered plug-in of each kind, with its options."""

from __future__ import annotations

import argparse
from typing import Any

NAME = "list"
ORDER = 2
RESUMES: str | None = None
"""What an interruption leaves: 'run' (continue with --resume), 'sweep' (rerun the command)."""


def add_parser(sub: Any) -> None:
    from flwbc.catalog import KINDS

    kinds = ", ".join(KINDS)
    lst = sub.add_parser(
        "list",
        help=f"list the registered plug-ins of every kind ({kinds})",
        description="Every registered plug-in of each kind, built in or loaded (entry points of "
        "the group flwbc.plugins, and --plugins modules), with its description and options: "
        "name, type, default (or 'required'), bounds and meaning.",
    )
    lst.add_argument(
        "kind", nargs="?", default=None, metavar="KIND", help=f"one kind only: {kinds}"
    )
    lst.add_argument(
        "--plugins", default="", metavar="MODULE,...", help="import these plug-in modules first"
    )


def command(args: argparse.Namespace, argv: list[str] | None) -> int:
    from flwbc.catalog import catalog, render
    from flwbc.plugins import load_plugins

    load_plugins([m.strip() for m in args.plugins.split(",") if m.strip()])
    print(render(catalog(args.kind)), end="")
    return 0

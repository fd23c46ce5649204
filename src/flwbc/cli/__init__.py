"""The `flwbc` command line: one module per subcommand in this package, each with its `NAME`,
its place in the help (`ORDER`), `add_parser(sub)` and `command(args, argv) -> exit status`,
found by discovery; what they share is in `common`. User mistakes print one line and exit 2;
Ctrl-C exits 130 and SIGTERM 143, each with how to continue (`RESUMES`).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from types import ModuleType

from flwbc._version import __version__
from flwbc.cli.common import config_from_args
from flwbc.cli.compare import compare_table
from flwbc.cli.summary import summary_lines
from flwbc.errors import FlwbcError
from flwbc.runtime import Terminated, stop_on_sigterm

__all__ = ["build_parser", "commands", "compare_table", "config_from_args", "main", "summary_lines"]


def commands() -> dict[str, ModuleType]:
    """Every subcommand's module by its name, in help order."""
    found = [
        importlib.import_module(f"{__name__}.{m.name}")
        for m in pkgutil.iter_modules(__path__)
        if m.name not in ("common", "__main__")
    ]
    return {m.NAME: m for m in sorted(found, key=lambda m: m.ORDER)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flwbc",
        description="Federated learning under targeted model poisoning, with FL-WBC.",
    )
    parser.add_argument("--version", action="version", version=f"flwbc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in commands().values():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with stop_on_sigterm():  # SIGTERM stops as Ctrl-C does: finished rounds saved
        return _dispatch(args, argv)


def _dispatch(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Run the parsed command; its exit status (2 for a user mistake, 130 after Ctrl-C, 143
    after SIGTERM)."""
    module = commands()[args.command]
    try:
        return module.command(args, argv)
    except FlwbcError as err:
        print(f"flwbc: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(_stopped_line(module.RESUMES, err), file=sys.stderr)
        return 143 if isinstance(err, Terminated) else 130


def _stopped_line(resumes: str | None, err: KeyboardInterrupt) -> str:
    """What Ctrl-C (SIGINT) or SIGTERM stopped, and how to continue it."""
    # Ctrl-C: off the line the terminal echoed ^C on
    what = "flwbc: stopped by SIGTERM" if isinstance(err, Terminated) else "\nflwbc: interrupted"
    if resumes == "sweep":
        return f"{what}; finished rounds are saved, run the same command again to continue"
    if resumes == "run":
        where = getattr(err, "run_dir", "RUN_DIR")
        return f"{what}; finished rounds are saved, continue with 'flwbc run --resume {where}'"
    return what

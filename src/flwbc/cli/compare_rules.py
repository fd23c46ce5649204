"""`flwbc compare-rules`: what other rules would have made of a run's own client updates."""

from __future__ import annotations

import argparse
from typing import Any

from flwbc.errors import FlwbcError

NAME = "compare-rules"
ORDER = 7
RESUMES: str | None = None
"""What an interruption leaves: 'run' (continue with --resume), 'sweep' (rerun the command)."""


def add_parser(sub: Any) -> None:
    rules = sub.add_parser(
        "compare-rules",
        help="what other aggregation rules would have made of a run's own client updates",
        description="Replay the run along its own trajectory; in every round apply each RULE to "
        "the same client updates and score the model it would make (D_M confidence and "
        "accuracy, test accuracy). Writes rules.jsonl, rules.md and rules.png|svg into the run "
        "directory and prints the table.",
    )
    rules.add_argument("run_dir", metavar="RUN_DIR", help="the run whose updates are replayed")
    rules.add_argument(
        "--rule",
        action="append",
        required=True,
        metavar="RULE",
        help="an aggregator, NAME or NAME:KEY=VALUE,... (e.g. fedavg, trimmed_mean:beta=0.1); "
        "repeat for several",
    )
    rules.add_argument("--rounds", type=int, default=None, help="only the first N rounds")
    rules.add_argument("--no-test", action="store_true", help="skip the test-set accuracy")
    rules.add_argument("--no-progress", action="store_true", help="no progress bar")


def command(args: argparse.Namespace, argv: list[str] | None) -> int:
    from flwbc.analysis.rules import Rule, compare_rules_run
    from flwbc.config import load_run_config

    if args.rounds is not None and args.rounds < 1:
        raise FlwbcError(f"--rounds must be positive, got {args.rounds}")
    load_run_config(args.run_dir)  # loads the run's plug-ins, which a rule may name
    rules = [Rule.parse(text) for text in args.rule]
    progress = not args.no_progress
    written = compare_rules_run(
        args.run_dir, rules, rounds=args.rounds, test=not args.no_test, progress=progress
    )
    print(written[1].read_text())
    for path in written:
        print(path)
    return 0

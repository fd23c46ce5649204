"""`flwbc fetch`: a dataset into the cache, MD5-checked."""

from __future__ import annotations

import argparse
from typing import Any

NAME = "fetch"
ORDER = 5
RESUMES: str | None = None
"""What an interruption leaves: 'run' (continue with --resume), 'sweep' (rerun the command)."""


def add_parser(sub: Any) -> None:
    fetch = sub.add_parser("fetch", help="download a dataset into the cache (MD5-checked)")
    fetch.add_argument("dataset", help="fmnist, mnist or cifar10")
    fetch.add_argument(
        "--data-dir",
        default=None,
        help="look for the dataset here first (default: $FLWBC_DATA_DIR); a download goes to "
        "the cache ($FLWBC_CACHE_DIR, else ~/.cache/flwbc)",
    )


def command(args: argparse.Namespace, argv: list[str] | None) -> int:
    from flwbc.data import resolve_dataset_dir

    print(resolve_dataset_dir(args.dataset, args.data_dir))
    return 0

"""What the benchmark scripts share (run them as `python benchmarks/<script>.py`)."""

from __future__ import annotations

import argparse

from flwbc.runtime import tune_allocator


def parse_with_allocator_flag(ap: argparse.ArgumentParser) -> argparse.Namespace:
    """Add `--default-malloc`, parse, and tune the allocator as `flwbc.run` does unless asked
    not to (to measure what the tuning is worth)."""
    ap.add_argument(
        "--default-malloc",
        action="store_true",
        help="keep glibc's allocator thresholds (flwbc.runtime.tune_allocator is skipped)",
    )
    args = ap.parse_args()
    if not args.default_malloc:
        tune_allocator()
    return args

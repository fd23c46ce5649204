"""scripts/bench_economies.py: values with their intervals, which differences the seeds tell
apart, and worst attacks that change, on a summary.csv built by hand."""

from __future__ import annotations

import csv
import importlib.util
import itertools
import sys
from pathlib import Path

import numpy as np

from flwbc.experiments.bench import intervals_overlap

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location(
    "bench_economies", ROOT / "scripts/bench_economies.py"
)
economies = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
sys.modules["bench_economies"] = economies
spec.loader.exec_module(economies)  # type: ignore[union-attr]

FIELDS = ["regime", "setting", "attack", "defense", "measure", "mean", "half_width", "seeds"]


def test_intervals_overlap_against_a_brute_force() -> None:
    grid = np.linspace(-1.0, 3.0, 40001)  # step 1e-4; no pair below is within 1e-3 of touching
    means, halves = ([0.0, 0.5, 1.2], [0.263, 1.043, 2.017]), ([0.137, 0.311], [0.113, 0.627])
    for a, ah, b, bh in itertools.product(means[0], halves[0], means[1], halves[1]):
        some_point_in_both = bool(np.any((abs(grid - a) <= ah) & (abs(grid - b) <= bh)))
        assert intervals_overlap(a, ah, b, bh) == some_point_in_both, (a, ah, b, bh)
    assert intervals_overlap(0.0, None, 0.0, 0.1) is None


def _report(tmp_path: Path, cells: list[tuple[str, str, str, str, float, float | None]]) -> str:
    with (tmp_path / "summary.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        for regime, setting, attack, defense, mean, half in cells:
            seeds = 1 if half is None else 3
            w.writerow(
                [regime, setting, attack, defense, "acc", mean, "" if half is None else half, seeds]
            )
    out = tmp_path / "report.md"
    with out.open("w", encoding="utf-8") as f:
        saved, sys.stdout = sys.stdout, f
        try:
            assert economies.main(tmp_path) == 0
        finally:
            sys.stdout = saved
    return out.read_text(encoding="utf-8")


def test_intervals_apart_and_worst_attacks(tmp_path: Path) -> None:
    u = "untargeted"
    text = _report(
        tmp_path,
        [
            (u, "economical", "none", "median", 0.70, 0.01),
            (u, "all data", "none", "median", 0.80, 0.01),
            # economical: IPM is the worst (0.50 < 0.55); with all data, sign flipping (0.70)
            (u, "economical", "IPM", "median", 0.50, 0.02),
            (u, "all data", "IPM", "median", 0.78, 0.02),
            (u, "economical", "sign flipping", "median", 0.55, 0.10),
            (u, "all data", "sign flipping", "median", 0.70, 0.10),
            # one-seed probes: no interval, so never apart
            (u, "economical", "IPM", "Krum", 0.20, None),
            (u, "all data", "IPM", "Krum", 0.60, None),
        ],
    )
    rows = {
        tuple(c.strip() for c in line.split("|")[1:3]): line
        for line in text.splitlines()
        if line.startswith("| ")
    }
    # 0.70 ± 0.01 and 0.80 ± 0.01 are disjoint; 0.55 ± 0.10 and 0.70 ± 0.10 overlap (0.65 ≥ 0.60)
    assert "| 70.0 ± 1.0 | 80.0 ± 1.0 | +10.0 | yes |" in rows[("median", "none")]
    assert "| 55.0 ± 10.0 | 70.0 ± 10.0 | +15.0 | no |" in rows[("median", "sign flipping")]
    assert "| 20.0 | 60.0 | +40.0 | – |" in rows[("Krum", "IPM")]
    # drops from the clean cell, both ways: 70 - 50 and 80 - 78
    assert rows[("median", "IPM")].endswith("| 20.0 | 2.0 |")
    # with all data: IPM 0.78 ± 0.02 against sign flipping 0.70 ± 0.10 overlap (0.76 ≤ 0.80)
    assert "- median: worst attack IPM → sign flipping (within the intervals)" in text
    assert "- Krum: worst attack the same" in text
    assert "apart in 2 of the 3 with intervals" in text
    assert "Seeds per cell: 1, 3." in text

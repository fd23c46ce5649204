"""The untargeted ranking under ByzFL's measure beside the board's own.

The board scores an untargeted cell by its test accuracy at the round budget (docs/bench.md);
ByzFL's benchmark scores it by the highest accuracy over its evaluations during training
(byzfl/benchmark/evaluate_results.py), so a defense that an attack breaks late keeps its
earlier accuracy there. This reads the board's cells.csv and each cell's run records (the
evaluated rounds; before the last one on the test subset), scores each cell both ways, ranks
the defenses by worst case both ways with the board's own functions, and prints both rankings,
their Kendall τ and the cells whose worst attack changes.

usage: python scripts/bench_peak.py SPEC RUNS OUT_DIR > results/leaderboard/peak.md
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from flwbc.errors import FlwbcError
from flwbc.experiments.bench import load_bench, ranking, read_cells, summarize, worst_cases
from flwbc.experiments.bench_report import rankings_side_by_side


def peak(run: Path) -> float | None:
    """The highest evaluated test accuracy of a run's records (None without any)."""
    accs = []
    for line in (run / "rounds.jsonl").read_text(encoding="utf-8").splitlines():
        acc = json.loads(line).get("test_acc")
        if acc is not None:
            accs.append(float(acc))
    return max(accs) if accs else None


def main(spec_name: str, runs: Path, out: Path) -> int:
    spec = load_bench(spec_name)
    regimes = {k: r for k, r in spec.regimes.items() if r.kind == "untargeted"}
    cells = [c for c in read_cells(out / "cells.csv") if c.regime in regimes and c.run]
    peaks = [dataclasses.replace(c, acc=peak(runs / c.run)) for c in cells if c.run]
    both = {"last round (the board)": cells, "peak over training (ByzFL)": peaks}
    ranks, worst, by = {}, {}, {}
    for name, got in both.items():
        summaries = summarize(got)
        by[name] = {(x.regime, x.setting, x.attack, x.defense): x.mean for x in summaries}
        w = worst_cases(summaries, regimes)
        worst[name] = {(s.regime, s.setting, s.defense): s for s in w}
        ranks[name] = ranking(w, regimes, spec.families)
    (a, ra), (b, rb) = ranks.items()
    lines = [
        "# The untargeted ranking by last-round and by peak accuracy",
        "",
        f"From {len(cells)} untargeted cells of `{spec.id}` (`python scripts/bench_peak.py`; "
        f"{sum(c.acc is None for c in peaks)} without an evaluated round left out). Score: the "
        "worst case over attacks averaged over settings, in percent. The peak is taken over "
        "the evaluated rounds: before the last one on the test subset, the last one on the "
        "whole test set, so it also gains from the subset's noise.",
        "",
    ]
    for regime in regimes:
        lines += [
            f"## {spec.regimes[regime].title}",
            "",
            *rankings_side_by_side(regime, (a, ra), (b, rb)),
        ]
        moved = []
        for key, s in worst[a].items():
            t = worst[b].get(key)
            if key[0] == regime and t is not None and t.attack != s.attack:
                moved.append(
                    f"- {key[2]} at {key[1]}: {s.attack} ({100 * s.mean:.1f} last, "
                    f"{100 * by[b][(*key[:2], s.attack, key[2])]:.1f} peak) → {t.attack} "
                    f"({100 * by[a][(*key[:2], t.attack, key[2])]:.1f} last, "
                    f"{100 * t.mean:.1f} peak)"
                )
        lines += ["", f"Worst attacks that change with the measure: {len(moved)}.", "", *moved, ""]
    sys.stdout.write("\n".join(lines))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])))
    except (FlwbcError, OSError) as err:
        print(f"bench_peak: {err}", file=sys.stderr)
        sys.exit(2)

"""What the confirming seeds changed: the board as screened beside the board with every seed.

The protocol screens every cell with the spec's seeds and spends the confirming seeds on each
defense's worst attacks (docs/bench.md). A worst case picked as the lowest of many one-seed
cells is biased towards that seed's unlucky draws (the winner's curse); the confirming seeds
measure by how much. This reads the board's cells.csv, summarises it twice with the board's own
functions (the screening seeds' runs only, then every run), and prints per regime: both
rankings and their Kendall τ; the mean shift of each screened worst case from its screening
value to its mean over every seed, with a 95% Student-t interval over the (setting, defense)
pairs; and the worst attacks the confirmation changed.

usage: python scripts/bench_confirm.py SPEC OUT_DIR > results/leaderboard/confirm.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from flwbc.errors import FlwbcError
from flwbc.experiments.bench import (
    Summary,
    load_bench,
    ranking,
    read_cells,
    summarize,
    t_interval,
    worst_cases,
)
from flwbc.experiments.bench_report import rankings_side_by_side


def _pct(s: Summary) -> str:
    return f"{100 * s.mean:.1f} ({s.seeds} seed{'s' * (s.seeds != 1)})"


def main(spec_name: str, out: Path) -> int:
    spec = load_bench(spec_name)
    cells = [
        c for c in read_cells(out / "cells.csv") if c.regime in spec.regimes and c.acc is not None
    ]
    screening = set(spec.seeds)
    boards = {
        "screened": [c for c in cells if c.seed in screening],
        "confirmed": cells,
    }
    summary, worst, ranks = {}, {}, {}
    for name, got in boards.items():
        summaries = summarize(got)
        summary[name] = {(s.regime, s.setting, s.attack, s.defense): s for s in summaries}
        w = worst_cases(summaries, spec.regimes)
        worst[name] = {(s.regime, s.setting, s.defense): s for s in w}
        ranks[name] = ranking(w, spec.regimes, spec.families)
    seeds = sorted({c.seed for c in cells})
    lines = [
        "# What the confirming seeds changed",
        "",
        f"From the {len(cells)} finished runs of `{spec.id}` in cells.csv "
        "(`python scripts/bench_confirm.py`), "
        f"seeds {', '.join(map(str, seeds))}; screened: the runs of seed "
        f"{', '.join(map(str, sorted(screening)))} only, as the board stood before its "
        "confirming seeds. Values in percent. Shift: the screened worst case's mean over all "
        "of its seeds minus its screening value, signed so that a positive shift means the "
        "defense looks better once confirmed (higher accuracy, lower success over baseline).",
        "",
    ]
    for regime, spec_regime in spec.regimes.items():
        sign = 1.0 if spec_regime.kind == "untargeted" else -1.0
        shifts, confirmed, moved = [], 0, []
        for key, s in sorted(worst["screened"].items()):
            if key[0] != regime:
                continue
            again = summary["confirmed"][(key[0], key[1], s.attack, key[2])]
            if again.seeds > s.seeds:
                confirmed += 1
                shifts.append(round(sign * (again.mean - s.mean), 9))  # as on the board
            t = worst["confirmed"][key]
            if t.attack != s.attack:
                moved.append(
                    f"- {key[2]} at {key[1]}: {s.attack} {100 * s.mean:.1f} screened, "
                    f"{_pct(again)} confirmed → {t.attack} {_pct(t)}"
                )
        lines += [f"## {spec_regime.title}", ""]
        if shifts:
            mean, half = t_interval(shifts)
            n = f"{len(shifts)} pair{'s' * (len(shifts) != 1)}"
            interval, over = (
                (f" ± {100 * half:.1f}", f"95% interval over the {n}")
                if half is not None
                else ("", f"no interval from {n}")
            )
            up = sum(x > 0 for x in shifts)
            down = sum(x < 0 for x in shifts)
            lines.append(
                f"Screened worst cases with more seeds since: {confirmed} of "
                f"{sum(k[0] == regime for k in worst['screened'])}. Their shift: mean "
                f"{100 * mean:+.1f}{interval} points ({over}), largest "
                f"{100 * max(shifts, key=abs):+.1f}; {up} better once confirmed, {down} worse, "
                f"{len(shifts) - up - down} the same."
            )
        else:
            lines.append("No screened worst case has more seeds yet.")
        lines += [
            "",
            *rankings_side_by_side(
                regime, ("screened", ranks["screened"]), ("confirmed", ranks["confirmed"])
            ),
        ]
        lines += ["", f"Worst attacks the confirmation changed: {len(moved)}.", "", *moved, ""]
    sys.stdout.write("\n".join(lines))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(main(sys.argv[1], Path(sys.argv[2])))
    except (FlwbcError, OSError) as err:
        print(f"bench_confirm: {err}", file=sys.stderr)
        sys.exit(2)

"""What the confirming seeds changed: the board as screened beside the board with every seed.

The protocol screens every cell with the spec's seeds and spends the confirming seeds on each
defense's worst attacks (docs/bench.md). A worst case picked as the lowest of many one-seed
cells is biased towards that seed's unlucky draws (the winner's curse); the confirming seeds
measure by how much. This reads the board's cells.csv, summarises it twice with the board's own
functions (the screening seeds' runs only, then every run), and prints per regime: both
rankings and their Kendall τ; the mean shift of each screened worst case from its screening
value to its mean over every seed, with a 95% Student-t interval over the (setting, defense)
pairs; and the worst attacks the confirmation changed. With `--plot PREFIX` it also draws
each confirmed worst case's screening value against its mean over every seed (PREFIX.png and
PREFIX.svg, a panel per regime): the winner's curse is the cloud's distance from the diagonal.

usage: python scripts/bench_confirm.py SPEC OUT_DIR [--plot PREFIX] > results/leaderboard/confirm.md
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
    tie_safe,
    worst_cases,
)
from flwbc.experiments.bench_report import UNITS, rankings_side_by_side


def _pct(s: Summary) -> str:
    return f"{100 * s.mean:.1f} ({s.seeds} seed{'s' * (s.seeds != 1)})"


Pair = tuple[float, float, float | None]  # screened value, confirmed mean, its half-width


def plot(title: str, panels: dict[str, tuple[str, list[Pair]]], prefix: Path) -> list[Path]:
    """Per regime (its kind's unit on both axes): each screened worst case with more seeds,
    its screening value against its mean over every seed with the 95% interval; the diagonal
    is no change."""
    from flwbc.plots import _finish, _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False)
    for ax, (regime, (kind, pairs)) in zip(axes[0], panels.items(), strict=True):
        xs = [100 * x for x, _, _ in pairs]
        ys = [100 * y for _, y, _ in pairs]
        err = [0.0 if h is None else 100 * h for _, _, h in pairs]
        ax.errorbar(xs, ys, yerr=err, fmt="o", ms=3, alpha=0.6, elinewidth=0.6, capsize=0)
        lo, hi = (0.0, 100.0) if kind == "untargeted" else (min([0.0, *xs, *ys]), 100.0)
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_title(f"{regime} ({len(pairs)} worst cases)", fontsize=9)
        ax.set_xlabel(f"screened: {UNITS[kind]}", fontsize=8)
        ax.set_ylabel("mean over every seed, 95% interval", fontsize=8)
    return _finish(plt, fig, prefix, title)


def main(spec_name: str, out: Path, plot_prefix: Path | None = None) -> int:
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
    panels: dict[str, tuple[str, list[Pair]]] = {}
    for regime, spec_regime in spec.regimes.items():
        sign = 1.0 if spec_regime.kind == "untargeted" else -1.0
        shifts, confirmed, moved = [], 0, []
        pairs = panels.setdefault(regime, (spec_regime.kind, []))[1]
        for key, s in sorted(worst["screened"].items()):
            if key[0] != regime:
                continue
            again = summary["confirmed"][(key[0], key[1], s.attack, key[2])]
            if again.seeds > s.seeds:
                confirmed += 1
                shifts.append(tie_safe(sign * (again.mean - s.mean)))
                pairs.append((s.mean, again.mean, again.half_width))
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
    if plot_prefix is not None:
        drawn = {r: p for r, p in panels.items() if p[1]}
        if drawn:
            plot(f"{spec.id}: worst cases screened and confirmed", drawn, plot_prefix)
    sys.stdout.write("\n".join(lines))
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    prefix = None
    if len(args) == 4 and args[2] == "--plot":
        prefix = Path(args.pop(3))
        args.pop(2)
    if len(args) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(main(args[0], Path(args[1]), prefix))
    except (FlwbcError, OSError) as err:
        print(f"bench_confirm: {err}", file=sys.stderr)
        sys.exit(2)

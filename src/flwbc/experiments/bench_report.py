"""The outputs of `flwbc bench`: CSV tables, the leaderboard in Markdown and one heatmap per
regime (one unit per colour scale: accuracy in the untargeted regime, success over the clean
baseline in the targeted one), and a defense's report card (`flwbc bench evaluate`)."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flwbc.experiments.bench import (
    CLEAN,
    CONFIDENCE,
    DIVERGED_LOSS,
    BenchCell,
    BenchSpec,
    Rank,
    Summary,
    _csv,
    cells_rows,
    coordinate_names,
    ranking,
    summarize,
    throughput,
    tie_safe,
    worst_cases,
)
from flwbc.runio import atomic_write_bytes

UNITS = {
    "untargeted": "test accuracy at the round budget (%)",
    "targeted": "attack success over the clean baseline (points)",
}


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _value(s: Summary) -> str:
    if s.half_width is None:
        return f"{_pct(s.mean)} (1 seed)"
    return f"{_pct(s.mean)} ± {100 * s.half_width:.1f}" + (" (1 seed, pooled)" if s.pooled else "")


def _grid_lines(spec: BenchSpec, ranks: list[Rank]) -> list[str]:
    """Which variant of each defense's options grid the ranking kept."""
    families = spec.families
    chosen = [r.defense for r in ranks if r.defense in families]
    if not chosen:
        return []
    sizes = Counter(families.values())
    picks = "; ".join(
        f"{families[d]}: {d.removeprefix(families[d]).strip()} of {sizes[families[d]]} variants"
        for d in chosen
    )
    return [
        "Options chosen from a grid by the score, one choice per defense and regime over all its "
        "settings, on the measure reported (no validation split, so a chosen variant's score is "
        f"biased upwards; every variant is in the heatmaps): {picks}.",
        "",
    ]


def _score(r: Rank) -> str:
    return _pct(r.score) + ("" if r.half_width is None else f" ± {100 * r.half_width:.1f}")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def rankings_side_by_side(
    regime: str, a: tuple[str, list[Rank]], b: tuple[str, list[Rank]]
) -> list[str]:
    """Two rankings of one regime's defenses, each `(name, ranks)` (by two measures, or before
    and after the confirming seeds), as Markdown: the Kendall τ between the two scores over the
    defenses both rank, then one table with the rank and score under each."""
    (name_a, ra), (name_b, rb) = a, b
    pa = {r.defense: r for r in ra if r.regime == regime}
    pb = {r.defense: r for r in rb if r.regime == regime}
    common = [d for d in pa if d in pb]
    tau = "n/a"
    if len(common) > 1:
        from scipy.stats import kendalltau

        scores = [pa[d].score for d in common], [pb[d].score for d in common]
        tau = f"{kendalltau(*scores).statistic:.2f}"
    rows = [
        [d, str(pa[d].rank), _pct(pa[d].score), str(pb[d].rank), _pct(pb[d].score)] for d in common
    ]
    return [
        f"Kendall τ between the two scores over {len(common)} defenses: {tau}.",
        "",
        *_table(["defense", f"{name_a}: rank", "score", f"{name_b}: rank", "score"], rows),
    ]


def leaderboard_markdown(
    spec: BenchSpec,
    cells: list[BenchCell],
    summaries: list[Summary],
    worst: list[Summary],
    ranks: list[Rank],
    *,
    command: str,
) -> str:
    done = [c for c in cells if c.run is not None]
    compute = sum(c.seconds or 0.0 for c in done)
    seeds = sorted({c.seed for c in done})
    lines = [
        f"# {spec.title}",
        "",
        spec.description.strip(),
        "",
        f"Command: `{command}`. Runs finished: {len(done)} of {len(cells)}; compute "
        f"{compute / 3600:.2f} h (the runs' own times); seeds seen: "
        f"{', '.join(map(str, seeds)) or 'none'}. Every value is a mean over a cell's seeds "
        f"with the half-width of its {CONFIDENCE:.0%} Student-t interval. A cell screened "
        "with one seed only is a probe: '(1 seed, pooled)' gives it the interval of one seed "
        "under the defense's seed-to-seed spread pooled over its cells of several seeds in "
        "that regime (an assumption of equal spread), '(1 seed)' alone has no interval.",
        "",
    ]
    speed = throughput(cells)
    if speed is not None:
        lines += [
            f"Throughput: {speed.runs_per_worker_hour:.0f} runs per worker-hour over the "
            f"{speed.runs} runs whose wall time is known; a run's wall time over its own "
            f"training and evaluation compute: median {speed.ratio_median:.2f}, 90th "
            f"percentile {speed.ratio_p90:.2f}.",
            "",
        ]
    by_summary = {(s.regime, s.setting, s.attack, s.defense): s for s in summaries}
    for rname, regime in spec.regimes.items():
        rr = [r for r in ranks if r.regime == rname]
        if not rr:
            continue
        better = "higher" if regime.kind == "untargeted" else "lower"
        lines += [
            f"## {regime.title or rname}: ranking",
            "",
            f"Score: the worst case over attacks ({UNITS[regime.kind]}; {better} is better), "
            "averaged over settings (± the 95% half-width of that mean, the settings taken as "
            "independent); then the single worst setting and attack.",
            "",
            *_table(
                ["rank", "defense", "score", "settings", "worst setting", "worst attack", "value"],
                [
                    [
                        str(r.rank),
                        r.defense,
                        _score(r),
                        str(r.settings),
                        r.worst_setting,
                        r.worst_attack,
                        _value(by_summary[(r.regime, r.worst_setting, r.worst_attack, r.defense)]),
                    ]
                    for r in rr
                ],
            ),
            "",
            *_grid_lines(spec, rr),
        ]
        settings = list(dict.fromkeys(w.setting for w in worst if w.regime == rname))
        defenses = [r.defense for r in rr]
        wby = {(w.setting, w.defense): w for w in worst if w.regime == rname}
        lines += [
            f"### {regime.title or rname}: worst case per setting",
            "",
            f"Each cell: the worst attack, its value ({UNITS[regime.kind]}), and the clean "
            "cell's accuracy.",
            "",
            *_table(
                ["defense", *settings],
                [
                    [
                        d,
                        *(
                            (
                                f"{wby[(s, d)].attack}: {_value(wby[(s, d)])}; clean "
                                f"{_clean(by_summary, rname, s, d)}"
                            )
                            if (s, d) in wby
                            else "–"
                            for s in settings
                        ),
                    ]
                    for d in defenses
                ],
            ),
            "",
        ]
    return "\n".join(lines + _divergence_lines(spec, done))


def _divergence_lines(spec: BenchSpec, done: list[BenchCell]) -> list[str]:
    """The runs whose training diverged, clean cells first: a clean cell that diverged is the
    defense failing without attack, which no accuracy drop or baseline can be measured from."""
    bad = [c for c in done if c.diverged]
    if not bad:
        return []
    bad.sort(key=lambda c: (c.kind != "clean", c.regime, c.defense, c.setting, c.attack, c.seed))
    clean = sum(c.kind == "clean" for c in bad)
    return [
        "## Runs that diverged",
        "",
        f"{len(bad)} of {len(done)} finished runs had a non-finite training loss or one above "
        f"{DIVERGED_LOSS:.0e} in some round; {clean} of them are clean cells (no attack). Under "
        "attack, divergence is the attack's success and the accuracy it leaves is measured as "
        "any other. A clean cell that diverged is the defense itself failing in that setting "
        "and seed: the accuracy drops and targeted baselines against it are left unmeasured "
        "(–), and the worst-case table gives the number of such seeds beside the clean accuracy.",
        "",
        *_table(
            ["regime", "defense", "setting", "attack", "seed", "accuracy at the end"],
            [
                [
                    spec.regimes[c.regime].title or c.regime,
                    c.defense,
                    c.setting,
                    "none (clean)" if c.kind == "clean" else c.attack,
                    str(c.seed),
                    _pct(c.acc),
                ]
                for c in bad
            ],
        ),
        "",
    ]


def _clean(by: dict[tuple[str, str, str, str], Summary], r: str, s: str, d: str) -> str:
    """The clean cell's accuracy, and how many of its seeds diverged."""
    c = by.get((r, s, CLEAN, d))
    if c is None:
        return _pct(None)
    return _value(c) + (f" ({c.diverged} of {c.seeds} seeds diverged)" if c.diverged else "")


def plot_regime(spec: BenchSpec, regime: str, summaries: list[Summary], prefix: Path) -> list[Path]:
    """One panel per setting: defenses as rows, attacks as columns, coloured by the regime's
    one unit (accuracy 0-100%, or success over baseline)."""
    import numpy as np

    from flwbc.plots import _finish, _pyplot

    plt = _pyplot()
    kind = spec.regimes[regime].kind
    mine = [s for s in summaries if s.regime == regime]
    settings = list(dict.fromkeys(s.setting for s in mine))
    attacks = list(
        dict.fromkeys(s.attack for s in mine if kind == "untargeted" or s.attack != CLEAN)
    )
    defenses = list(dict.fromkeys(s.defense for s in mine))
    by = {(s.setting, s.attack, s.defense): s for s in mine}
    cols = min(3, len(settings))
    nrows = -(-len(settings) // cols)
    fig, axes = plt.subplots(
        nrows,
        cols,
        figsize=(cols * (0.45 * len(attacks) + 2.6), nrows * (0.3 * len(defenses) + 1.6)),
        squeeze=False,
    )
    cmap, vmin, vmax = ("viridis", 0.0, 100.0) if kind == "untargeted" else ("Reds", 0.0, 100.0)
    img = None
    for i, setting in enumerate(settings):
        ax = axes[i // cols][i % cols]
        grid = np.full((len(defenses), len(attacks)), np.nan)
        for a, attack in enumerate(attacks):
            for d, defense in enumerate(defenses):
                s = by.get((setting, attack, defense))
                if s is not None:
                    grid[d, a] = 100 * s.mean  # below vmin: the scale's lowest colour
        img = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        ax.set_title(setting, fontsize=9)
        ax.set_xticks(range(len(attacks)), attacks, fontsize=7, rotation=60, ha="right")
        ax.set_yticks(range(len(defenses)), defenses if i % cols == 0 else [""] * len(defenses))
        ax.tick_params(axis="y", labelsize=7)
        for d in range(len(defenses)):
            for a in range(len(attacks)):
                if not np.isnan(grid[d, a]):
                    ax.text(a, d, f"{grid[d, a]:.0f}", ha="center", va="center", fontsize=5)
    for j in range(len(settings), nrows * cols):
        axes[j // cols][j % cols].axis("off")
    if img is not None:  # the shared colour bar in a strip of its own, right of the panels
        cax = fig.add_axes((0.9, 0.25, 0.015, 0.5))
        fig.colorbar(img, cax=cax, label=UNITS[kind])
    with warnings.catch_warnings():  # tight_layout warns about the colour bar's axes
        warnings.simplefilter("ignore", UserWarning)
        title = f"{spec.title}: {spec.regimes[regime].title or regime}"
        return _finish(plt, fig, prefix, title, right=0.88 if img is not None else 1.0)


def write_bench_cells(spec: BenchSpec, cells: list[BenchCell], out: Path) -> Path:
    """cells.csv alone (atomically): what a bench has measured so far, while it runs."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "cells.csv"
    atomic_write_bytes(path, _csv(cells_rows(cells, coordinate_names(spec))).encode())
    return path


def write_bench(
    spec: BenchSpec, cells: list[BenchCell], out: Path, *, command: str, plots: bool = True
) -> list[Path]:
    """cells.csv, summary.csv, worst.csv, ranking.csv, leaderboard.md, the heatmaps and
    index.html (the static page)."""
    out.mkdir(parents=True, exist_ok=True)
    summaries = summarize(cells)
    worst = worst_cases(summaries, spec.regimes)
    ranks = ranking(worst, spec.regimes, spec.families)
    files = {
        "cells.csv": _csv(cells_rows(cells, coordinate_names(spec))),
        "summary.csv": _csv([asdict(s) for s in summaries]),
        "worst.csv": _csv([asdict(w) for w in worst]),
        "ranking.csv": _csv([asdict(r) for r in ranks]),
        "leaderboard.md": leaderboard_markdown(
            spec, cells, summaries, worst, ranks, command=command
        ),
    }
    paths = []
    for name, text in files.items():
        atomic_write_bytes(out / name, text.encode())
        paths.append(out / name)
    svgs: dict[str, str] = {}
    if plots:
        for regime in spec.regimes:
            if any(s.regime == regime for s in summaries):
                drawn = plot_regime(spec, regime, summaries, out / f"heatmap-{regime}")
                paths += drawn
                svgs[regime] = next(p for p in drawn if p.suffix == ".svg").read_text()
    by = {(s.regime, s.setting, s.attack, s.defense): s for s in summaries}
    html = leaderboard_html(spec, ranks, by, svgs, worst)
    atomic_write_bytes(out / "index.html", html.encode())
    paths.append(out / "index.html")
    return paths


def report_card(spec: BenchSpec, name: str, cells: list[BenchCell], *, command: str) -> str:
    """A defense's place among the others: its rank per regime, its worst cases, and where it
    loses (the settings and attacks in which it is worse than the median defense)."""
    summaries = summarize(cells)
    worst = worst_cases(summaries, spec.regimes)
    ranks = ranking(worst, spec.regimes, spec.families)
    lines = [f"# Report card: {name}", "", f"Command: `{command}`.", ""]
    by_summary = {(s.regime, s.setting, s.attack, s.defense): s for s in summaries}
    for rname, regime in spec.regimes.items():
        rr = [r for r in ranks if r.regime == rname]
        mine = [r for r in rr if r.defense == name]
        if not mine:
            continue
        r = mine[0]
        lines += [
            f"## {regime.title or rname}",
            "",
            f"Rank {r.rank} of {len(rr)} (score {_score(r)}, {UNITS[regime.kind]}, over "
            f"{r.settings} settings). Worst: {r.worst_attack} in {r.worst_setting}, "
            f"{_value(by_summary[(rname, r.worst_setting, r.worst_attack, name)])}.",
            "",
        ]
        sign = 1.0 if regime.kind == "targeted" else -1.0
        rows = []
        for w in [w for w in worst if w.regime == rname and w.defense == name]:
            ranked = {r.defense for r in rr}  # a grid counts once, by its kept variant
            median = _median_defense(worst, (rname, w.setting), ranked)
            worse = tie_safe(sign * (w.mean - median)) > 0
            verdict = "loses" if worse else "holds"
            losses = _losses(summaries, rname, w.setting, name, sign, ranked)
            rows.append([w.setting, w.attack, _value(w), _pct(median), verdict, losses])
        lines += [
            *_table(
                [
                    "setting",
                    "worst attack",
                    "value",
                    "median defense's worst",
                    "verdict",
                    "worse than the median defense under (its value / theirs)",
                ],
                rows,
            ),
            "",
        ]
    mine = [c for c in cells if c.defense == name and c.run is not None]
    return "\n".join(lines + _divergence_lines(spec, mine))


def _median_defense(summaries: list[Summary], where: tuple[str, ...], ranked: set[str]) -> float:
    """The median value over the ranked defenses of the summaries at `where`, a (regime,
    setting) or (regime, setting, attack) prefix (the upper one of an even count)."""
    peers = sorted(
        x.mean
        for x in summaries
        if (x.regime, x.setting, x.attack)[: len(where)] == where and x.defense in ranked
    )
    return peers[len(peers) // 2]


def _losses(
    summaries: list[Summary], regime: str, setting: str, name: str, sign: float, ranked: set[str]
) -> str:
    """The attacks of a setting under which `name` does worse than the median defense does
    under the same attack, the largest gap first."""
    gaps = []
    for s in summaries:
        if (s.regime, s.setting, s.defense) != (regime, setting, name) or s.attack == CLEAN:
            continue
        median = _median_defense(summaries, (regime, setting, s.attack), ranked)
        if tie_safe(sign * (s.mean - median)) > 0:
            gaps.append((sign * (s.mean - median), f"{s.attack} ({_pct(s.mean)} / {_pct(median)})"))
    return ", ".join(text for _, text in sorted(gaps, reverse=True)) or "none"


def card_inputs(stored: list[BenchCell], new: list[BenchCell], name: str) -> list[BenchCell]:
    """The stored cells of the other defenses with the new defense's cells."""
    return [c for c in stored if c.defense != name] + [c for c in new if c.defense == name]


__all__ = ["plot_regime", "report_card", "write_bench", "card_inputs"]


_SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0];
      var rows = Array.from(body.rows);
      var up = th.dataset.order !== 'up';
      th.dataset.order = up ? 'up' : 'down';
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.value, y = b.cells[col].dataset.value;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
        return up ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _worst_table_html(regime: str, defenses: list[str], worst: list[Summary]) -> list[str]:
    """A regime's worst case per setting: a row per ranked defense, a column per setting, each
    cell the worst attack and its value, sorted by the value."""
    from html import escape

    mine = {(w.setting, w.defense): w for w in worst if w.regime == regime}
    settings = list(dict.fromkeys(w.setting for w in worst if w.regime == regime))
    if not mine:
        return []
    out = [
        "<h3>Worst case per setting</h3>",
        f"<table class='sortable' id='worst-{escape(regime)}'><thead><tr><th>defense</th>"
        + "".join(f"<th>{escape(s)}</th>" for s in settings)
        + "</tr></thead><tbody>",
    ]
    for d in defenses:
        cells: list[tuple[Any, str]] = [(d, d)]
        for s in settings:
            w = mine.get((s, d))
            cells.append(("", "–") if w is None else (w.mean, f"{w.attack}: {_value(w)}"))
        out.append(_row_html(cells))
    out.append("</tbody></table>")
    return out


def _row_html(cells: list[tuple[Any, str]]) -> str:
    """A table row of (sort value, text) cells: the page's script sorts by the values."""
    from html import escape

    return (
        "<tr>"
        + "".join(f"<td data-value='{escape(str(v))}'>{escape(text)}</td>" for v, text in cells)
        + "</tr>"
    )


def leaderboard_html(
    spec: BenchSpec,
    ranks: list[Rank],
    by: dict[tuple[str, str, str, str], Summary],
    svgs: dict[str, str],
    worst: list[Summary] | None = None,
) -> str:
    """The leaderboard as one static page (open it from disk, no server): per regime the
    ranking and the worst case per setting, tables sortable by any column (click its header),
    and the regime's heatmap inline."""
    from html import escape

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{escape(spec.title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px}th{cursor:pointer;background:#eee}"
        "svg{max-width:100%;height:auto}</style></head><body>",
        f"<h1>{escape(spec.title)}</h1><p>{escape(spec.description.strip())}</p>",
    ]
    for rname, regime in spec.regimes.items():
        rr = [r for r in ranks if r.regime == rname]
        if not rr:
            continue
        parts.append(f"<h2>{escape(regime.title or rname)}</h2>")
        parts.append(
            f"<p>Score: {escape(UNITS[regime.kind])}, worst case over attacks "
            "averaged over settings. Click a column to sort.</p>"
        )
        parts.append("<table class='sortable' id='rank-" + escape(rname) + "'><thead><tr>")
        head = ["rank", "defense", "score", "worst setting", "worst attack", "value", "± (95%)"]
        parts.append("".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>")
        for r in rr:
            s = by[(r.regime, r.worst_setting, r.worst_attack, r.defense)]
            half = "" if s.half_width is None else f"{100 * s.half_width:.1f}"
            half += " (pooled)" if s.pooled else ""
            cells = [
                (r.rank, str(r.rank)),
                (r.defense, r.defense),
                (r.score, _score(r)),
                (r.worst_setting, r.worst_setting),
                (r.worst_attack, r.worst_attack),
                (s.mean, _pct(s.mean)),
                (s.half_width if s.half_width is not None else "", half or "1 seed"),
            ]
            parts.append(_row_html(cells))
        parts.append("</tbody></table>")
        parts += _worst_table_html(rname, [r.defense for r in rr], worst or [])
        if rname in svgs:
            svg = svgs[rname]
            parts.append(svg[svg.find("<svg") :])
    parts.append(f"<script>{_SORT_JS}</script></body></html>")
    return "\n".join(parts)

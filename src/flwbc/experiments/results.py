"""A spec's results from its finished runs: per-run metrics, per-point aggregates over seeds,
tables, and the verdict on each of the paper's claims.

Per branch run (paper §7.1 metrics):
- attack mitigation rounds of each adversarial round (`flwbc.metrics.mitigation_rounds`); an
  attack not mitigated before the next one (or the end) counts as "more than" its window;
- benign accuracy: the mean test accuracy over the branch's rounds;
- accuracy cost: the warm model's accuracy (the warm-up's last round) minus that mean, in
  percentage points, paired by seed.

A claim selects points with `where` and is judged per setting; the verdict is *reproduced* when
every check passes, *partly* when at least half do, *not reproduced* otherwise, and *not run*
without data.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwbc.experiments.specs import Claim, RunSpec, Spec, series_of
from flwbc.experiments.sweep import is_finished, run_dir
from flwbc.metrics import mitigation_rounds
from flwbc.runio import read_json, read_jsonl

RETURNED = "†"
"""Marks an attack that was mitigated (§7.1) and later came back in the same window."""


@dataclass
class Event:
    """One adversarial round's mitigation: `rounds`, or a lower bound when `censored`;
    `returned` when the attack rose above both thresholds again after `rounds`, without a new
    attack (`flwbc.metrics.mitigation_rounds`' `sustained`)."""

    rounds: int
    censored: bool
    returned: bool = False

    def __str__(self) -> str:
        if self.censored:
            return f">{self.rounds - 1}"
        return f"{self.rounds}{RETURNED if self.returned else ''}"


@dataclass
class BranchResult:
    coords: dict[str, Any]
    records: list[dict[str, Any]]
    warm_acc: float | None
    events: list[Event]
    mean_acc: float | None
    seconds: float

    @property
    def cost(self) -> float | None:
        if self.warm_acc is None or self.mean_acc is None:
            return None
        return 100.0 * (self.warm_acc - self.mean_acc)


@dataclass
class Point:
    """One grid point (setting and axis values) aggregated over its seeds."""

    coords: dict[str, Any]
    runs: list[BranchResult] = field(default_factory=list)

    @property
    def events(self) -> list[Event]:
        return [e for r in self.runs for e in r.events]

    def mitigation(self) -> tuple[float, bool] | None:
        """Mean mitigation rounds over all attacks and seeds, and whether it is a lower bound."""
        ev = self.events
        if not ev:
            return None
        return statistics.fmean(e.rounds for e in ev), any(e.censored for e in ev)

    def _stat(self, values: list[float | None]) -> tuple[float, float] | None:
        vals = [v for v in values if v is not None]
        if not vals:
            return None
        return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)

    def accuracy(self) -> tuple[float, float] | None:
        return self._stat([r.mean_acc for r in self.runs])

    def cost(self) -> tuple[float, float] | None:
        return self._stat([r.cost for r in self.runs])


def timing_seconds(path: Path) -> float:
    try:
        return sum(float(t.get("seconds", 0.0)) for t in read_jsonl(path / "timings.jsonl"))
    except FileNotFoundError:
        return 0.0


def load_branch(store: Path, run: RunSpec, parent: RunSpec | None) -> BranchResult | None:
    """A finished branch's metrics, or None if it has not finished."""
    path = run_dir(store, run)
    if not is_finished(path):
        return None
    records = read_jsonl(path / "rounds.jsonl")
    warm_acc = None
    if parent is not None and is_finished(run_dir(store, parent)):
        warm_acc = read_json(run_dir(store, parent) / "summary.json").get("final_test_acc")
    events = [
        Event(m["rounds"], False, m["sustained"] != m["rounds"])
        if m["rounds"] is not None
        else Event(m["observed"] + 1, True)
        for m in mitigation_rounds(records)
    ]
    accs = [r["test_acc"] for r in records if r.get("test_acc") is not None]
    return BranchResult(
        coords=run.coords,
        records=records,
        warm_acc=warm_acc,
        events=events,
        mean_acc=statistics.fmean(accs) if accs else None,
        seconds=timing_seconds(path),
    )


@dataclass
class SpecResults:
    spec: Spec
    points: list[Point]
    seeds: list[int]
    run_keys: set[str]
    run_seconds: dict[str, float]
    """Compute seconds of each finished run, by run key (runs shared between specs have the
    same key, so a total over several specs counts each once)."""

    @property
    def runs_total(self) -> int:
        return len(self.run_keys)

    @property
    def runs_finished(self) -> int:
        return len(self.run_seconds)

    @property
    def seconds(self) -> float:
        return sum(self.run_seconds.values())

    def axes(self) -> list[str]:
        return ["setting", *self.spec.axes]

    def select(self, where: dict[str, str | list[str]]) -> list[Point]:
        def ok(p: Point) -> bool:
            for ax, want in where.items():
                have = series_of(p.coords[self.series_axis]) if ax == "series" else p.coords[ax]
                if have not in ([want] if isinstance(want, str) else want):
                    return False
            return True

        return [p for p in self.points if p.runs and ok(p)]

    @property
    def series_axis(self) -> str:
        return self.spec.plot.series or next(iter(self.spec.axes))


def collect(spec: Spec, runs: list[RunSpec], store: Path) -> SpecResults:
    """Load every finished branch of `runs` (the spec's expansion) and group them by point."""
    by_key = {r.key: r for r in runs}
    points: dict[tuple[Any, ...], Point] = {}
    axes = ["setting", *spec.axes]
    run_seconds: dict[str, float] = {}
    seeds = set()
    for run in runs:
        path = run_dir(store, run)
        if is_finished(path):
            run_seconds[run.key] = timing_seconds(path)
        if run.role != "branch":
            continue
        ident = tuple(run.coords[a] for a in axes)
        point = points.setdefault(ident, Point({a: run.coords[a] for a in axes}))
        res = load_branch(store, run, by_key.get(run.parent or ""))
        if res is not None:
            point.runs.append(res)
            seeds.add(run.coords["seed"])
    return SpecResults(
        spec,
        list(points.values()),
        seeds=sorted(seeds),
        run_keys={r.key for r in runs},
        run_seconds=run_seconds,
    )


def _fmt(stat: tuple[float, float] | None, scale: float = 1.0, digits: int = 1) -> str:
    if stat is None:
        return "–"
    mean, sd = stat
    return f"{scale * mean:.{digits}f} ± {scale * sd:.{digits}f}"


def _fmt_mit(point: Point) -> str:
    m = point.mitigation()
    if m is None:
        return "–"
    return f"{'>' if m[1] else ''}{m[0]:.1f}"


def points_table(res: SpecResults) -> list[dict[str, Any]]:
    """One row per grid point: its coordinates and aggregates over seeds."""
    rows = []
    for p in res.points:
        row: dict[str, Any] = dict(p.coords)
        row["seeds"] = len(p.runs)
        row["mitigation rounds per attack"] = " ".join(str(e) for e in p.events) or "–"
        row["mean mitigation rounds"] = _fmt_mit(p)
        row["benign accuracy (%)"] = _fmt(p.accuracy(), 100.0)
        row["accuracy cost (points)"] = _fmt(p.cost())
        rows.append(row)
    return rows


def pivot_table(res: SpecResults) -> list[dict[str, Any]]:
    """Rows: the spec's `table.rows` axis; columns: settings; cells: mean mitigation rounds
    measured, with the paper's value in parentheses."""
    assert res.spec.table is not None
    rows_axis = res.spec.table.rows
    settings = list(dict.fromkeys(p.coords["setting"] for p in res.points))
    out = []
    for name in res.spec.axes[rows_axis]:
        row: dict[str, Any] = {rows_axis: name}
        for s in settings:
            pts = [
                p for p in res.points if p.coords[rows_axis] == name and p.coords["setting"] == s
            ]
            measured = _fmt_mit(pts[0]) if pts else "–"
            paper = res.spec.paper_values.get(name, {}).get(s)
            row[s] = f"{measured} (paper {paper})" if paper else measured
        out.append(row)
    return out


def to_markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no finished runs)\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def curves_csv(res: SpecResults) -> str:
    """Every finished branch's per-round record, long format."""
    rows = []
    for p in res.points:
        for r in p.runs:
            for rec in r.records:
                rows.append(
                    {
                        **p.coords,
                        "seed": r.coords["seed"],
                        "round": rec["round"],
                        "adversarial": rec["adversarial"],
                        "target_conf": rec["target_conf"],
                        "target_acc": rec["target_acc"],
                        "test_acc": rec["test_acc"],
                    }
                )
    return to_csv(rows)


@dataclass
class Verdict:
    claim: Claim
    verdict: str
    measured: str


def _verdict(passed: int, total: int) -> str:
    if total == 0:
        return "not run"
    if passed == total:
        return "reproduced"
    return "partly" if 2 * passed >= total else "not reproduced"


def _paper_ok(measured: float, paper: str, tol: float) -> bool:
    if paper.startswith(">"):
        return measured >= float(paper[1:]) + 1 - tol
    return abs(measured - float(paper)) <= tol


def judge(res: SpecResults, claim: Claim) -> Verdict:
    """Judge one claim on the spec's results (see the module docstring)."""
    pts = res.select(claim.where)
    chk = claim.check
    by_setting: dict[str, list[Point]] = defaultdict(list)
    for p in pts:
        by_setting[p.coords["setting"]].append(p)
    passed = total = 0
    parts = []
    for setting, group in by_setting.items():
        if chk.kind in ("mitigation_at_most", "mitigation_more_than"):
            v = chk.value if chk.value is not None else math.inf
            ev = [e for p in group for e in p.events]
            if chk.kind == "mitigation_at_most":
                ok = [not e.censored and e.rounds <= v for e in ev]
            else:
                # a censored attack whose window was shorter than v cannot be judged
                ev = [e for e in ev if not e.censored or e.rounds > v]
                ok = [e.rounds > v for e in ev]
            passed, total = passed + sum(ok), total + len(ok)
            parts.append(f"{setting}: {sum(ok)}/{len(ok)} attacks ({' '.join(str(e) for e in ev)})")
        elif chk.kind == "cost_at_most":
            costs = [r.cost for p in group for r in p.runs if r.cost is not None]
            ok = [c <= (chk.value or 0.0) for c in costs]
            passed, total = passed + sum(ok), total + len(ok)
            parts.append(
                f"{setting}: {sum(ok)}/{len(ok)} runs "
                f"(cost {', '.join(f'{c:.1f}' for c in costs)} points)"
            )
        elif chk.kind in ("frontier", "frontier_none"):
            for series in dict.fromkeys(series_of(p.coords[res.series_axis]) for p in group):
                cand = []
                for p in group:
                    cost, mit = p.cost(), p.mitigation()
                    if (
                        series_of(p.coords[res.series_axis]) == series
                        and cost is not None
                        and mit is not None
                        and cost[0] <= (chk.cost or 0.0)
                    ):
                        cand.append((mit[0], mit[1], p))
                best = min(cand, key=lambda c: c[0], default=None)
                reach = best is not None and not best[1] and best[0] <= (chk.value or 0.0)
                ok = reach if chk.kind == "frontier" else not reach
                passed, total = passed + ok, total + 1
                shown = (
                    f"best {'>' if best[1] else ''}{best[0]:.1f} rounds "
                    f"({best[2].coords[res.series_axis]})"
                    if best
                    else "no point"
                )
                parts.append(f"{setting} {series}: {shown} within {chk.cost:g} points cost")
        elif chk.kind == "paper_table":
            rows_axis = res.spec.table.rows if res.spec.table else res.series_axis
            for p in group:
                paper = res.spec.paper_values.get(p.coords[rows_axis], {}).get(setting)
                mit = p.mitigation()
                if paper is None or mit is None:
                    continue
                ok = _paper_ok(mit[0], paper, chk.tolerance)
                passed, total = passed + ok, total + 1
                parts.append(
                    f"{setting} {p.coords[rows_axis]}: "
                    f"{'>' if mit[1] else ''}{mit[0]:.1f} vs {paper}"
                )
    return Verdict(claim, _verdict(passed, total), "; ".join(parts) or "no finished runs")

"""`flwbc reproduce`: run the paper's results from their specs and write figures, tables and a
REPORT.md that puts each claim of the paper beside the measured value, with a verdict.

Layout of the output directory:
- `<id>/<id>.png|.svg`: the figure (Fig. 2-6);
- `<id>/points.csv|.md`: one row per grid point, aggregated over seeds;
- `<id>/table.csv|.md`: Table 1 in the paper's layout (measured, with the paper's value);
- `<id>/curves.csv`: every branch's per-round record;
- `REPORT.md`: the results named now and those an earlier call wrote into the same output
  directory, with their claims and verdicts (nothing of a result never named).

Runs live in a separate store (default `runs/reproduce`), shared by all results, so warm-ups
are trained once and an interrupted reproduction continues where it stopped. The output
directory defaults to `<store>/results`, beside the runs it describes, never the committed
`results/`; a report covering more finished runs is never replaced without `overwrite`.
"""

from __future__ import annotations

import platform
import re
import shlex
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from flwbc._version import __version__
from flwbc.errors import FlwbcError
from flwbc.experiments.results import (
    RETURNED,
    SpecResults,
    collect,
    curves_csv,
    judge,
    pivot_table,
    points_table,
    to_csv,
    to_markdown,
)
from flwbc.experiments.specs import (
    RESULTS,
    RunSpec,
    Settings,
    Spec,
    expand,
    load_settings,
    load_spec,
)
from flwbc.experiments.sweep import SweepReport, run_sweep
from flwbc.runio import atomic_write_bytes

if TYPE_CHECKING:
    from flwbc.experiments.ray_backend import RayOptions


@dataclass
class Plan:
    specs: list[Spec]
    runs: dict[str, list[RunSpec]]

    def ordered_runs(self) -> list[RunSpec]:
        """Every run once, result by result and seed by seed, warm-ups before their branches,
        so early seeds of early results finish first."""
        seen: set[str] = set()
        out = []
        for spec in self.specs:
            for r in sorted(
                self.runs[spec.id], key=lambda r: (r.coords["seed"], r.role != "warmup")
            ):
                if r.key not in seen:
                    seen.add(r.key)
                    out.append(r)
        return out


def targets(names: list[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        for t in RESULTS if n == "all" else (n,):
            if t not in out:
                out.append(t)
    return out


def plan(
    names: list[str],
    settings: Settings,
    *,
    quick: bool,
    seeds: list[int] | None = None,
    data_dir: str | None = None,
) -> Plan:
    specs = [load_spec(n, settings) for n in targets(names)]
    runs = {s.id: expand(s, settings, quick=quick, seeds=seeds, data_dir=data_dir) for s in specs}
    return Plan(specs, runs)


def write_result(res: SpecResults, out: Path) -> list[Path]:
    """Figure, tables and curves of one result into `out/<id>/`."""
    from flwbc.plots import plot_spec

    d = out / res.spec.id
    d.mkdir(parents=True, exist_ok=True)
    files = plot_spec(res, d / res.spec.id)
    rows = points_table(res)
    for name, text in (
        ("points.csv", to_csv(rows)),
        ("points.md", to_markdown(rows)),
        ("curves.csv", curves_csv(res)),
    ):
        atomic_write_bytes(d / name, text.encode())
        files.append(d / name)
    if res.spec.table is not None:
        table = pivot_table(res)
        atomic_write_bytes(d / "table.csv", to_csv(table).encode())
        atomic_write_bytes(d / "table.md", to_markdown(table).encode())
        files += [d / "table.csv", d / "table.md"]
    return files


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _distinct_runs(results: list[SpecResults]) -> tuple[dict[str, float], set[str]]:
    """Compute seconds of every finished run, and every run key, each counted once however many
    results share it."""
    finished: dict[str, float] = {}
    keys: set[str] = set()
    for res in results:
        finished.update(res.run_seconds)
        keys.update(res.run_keys)
    return finished, keys


_RUNS_LINE = re.compile(r"^Runs: (\d+) of (\d+) distinct runs finished", re.MULTILINE)


def finished_in_report(path: Path) -> int | None:
    """How many finished runs an existing REPORT.md covers (None: no report, or not ours)."""
    try:
        found = _RUNS_LINE.search(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return int(found.group(1)) if found else None


def guard_report(out: Path, finished: int, *, overwrite: bool) -> None:
    """Refuse to replace a REPORT.md that covers more finished runs than `finished`, so that no
    command silently swaps a finished reproduction for a thinner one (`overwrite` allows it)."""
    existing = finished_in_report(out / "REPORT.md")
    if overwrite or existing is None or existing <= finished:
        return
    raise FlwbcError(
        f"{out / 'REPORT.md'} covers {existing} finished runs and this would replace it with "
        f"{finished}; choose another --out, point --runs at the store that holds its runs, "
        "or pass --overwrite"
    )


def _compute_line(results: list[SpecResults]) -> str:
    """The whole report's run count and compute, each run counted once however many results
    share it."""
    finished, keys = _distinct_runs(results)
    return (
        f"Runs: {len(finished)} of {len(keys)} distinct runs finished (warm-ups and branches "
        f"shared between results counted once), {_hours(sum(finished.values()))} of compute "
        "(the sum of the runs' own times; runs in parallel share the wall clock)."
    )


def report(
    results: list[SpecResults],
    out: Path,
    *,
    command: str,
    quick: bool,
    store: Path,
    spec_files: dict[str, str] | None = None,
) -> str:
    """REPORT.md: per result, its figure, table and each claim with the measured value and a
    verdict. `spec_files` maps the id of a result loaded from a user's spec file to that file, so
    its command names the file."""
    spec_files = spec_files or {}
    lines = [
        "# FL-WBC reproduction report",
        "",
        f"Generated {datetime.now().isoformat(timespec='seconds')} by flwbc {__version__} "
        f"(torch {torch.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}){' in --quick mode: the numbers mean nothing' if quick else ''}.",
        "",
        f"Command: `{command}` (runs stored in `{store}`; rerun the same command to continue an "
        "interrupted reproduction). Every run's config, seed and version are in its "
        "`config.json`. Specs: `src/flwbc/experiments/specs/` (the paper's)"
        + "".join(f", `{f}`" for f in spec_files.values())
        + ".",
        "",
        "Verdicts: *reproduced* when every check of a claim passes, *partly* when at least half "
        "do, *not reproduced* otherwise. Mitigation rounds follow §7.1 (rounds after an "
        "adversarial round until confidence < 50% or misclassification accuracy < benign error); "
        f"'>k' means not mitigated within the k rounds observed; 'k{RETURNED}' means mitigated "
        "after k rounds, then back above both thresholds later in the window without a new "
        "attack (k is still §7.1's count, which the verdicts use). Accuracy cost is the warm "
        "model's accuracy minus the mean accuracy over the branch, in points.",
        "",
        "A verdict on a result whose runs have not all finished is marked *(partial)*: it "
        "judges only the settings and seeds that have.",
        "",
        _compute_line(results),
        "",
        *(
            [
                "Why the verdicts come out as they do, with the evidence for each claim that "
                "did not reproduce: [FINDINGS.md](FINDINGS.md) (written by hand).",
                "",
            ]
            if (out / "FINDINGS.md").exists()
            else []
        ),
        "| result | runs finished | claim | measured | verdict |",
        "|---|---|---|---|---|",
    ]
    for res in results:
        partial = res.runs_finished < res.runs_total
        for claim in res.spec.claims:
            v = judge(res, claim)
            verdict = f"**{v.verdict}**" + (
                " (partial)" if partial and v.verdict != "not run" else ""
            )
            lines.append(
                f"| {res.spec.id} | {res.runs_finished}/{res.runs_total} | {claim.text} "
                f"| {v.measured} | {verdict} |"
            )
    for res in results:
        sid = res.spec.id
        lines += [
            "",
            f"## {res.spec.title}",
            "",
            res.spec.description.strip(),
            "",
            f"Runs finished: {res.runs_finished} of {res.runs_total} "
            f"(seeds with results: {', '.join(map(str, res.seeds)) or 'none'}; "
            f"spec seeds: {', '.join(map(str, res.spec.seeds))}). "
            f"Compute time of its finished runs (warm-ups included): {_hours(res.seconds)}. "
            f"Command: `flwbc reproduce {shlex.quote(spec_files.get(sid, sid))}"
            f"{' --quick' if quick else ''}`.",
            "",
        ]
        if (out / sid / f"{sid}.png").exists():
            lines += [f"![{sid}]({sid}/{sid}.png)", ""]
        if res.spec.table is not None and (out / sid / "table.md").exists():
            lines += [(out / sid / "table.md").read_text(), ""]
        lines += [(out / sid / "points.md").read_text()]
        events = [e for p in res.points for e in p.events]
        if events:
            back = sum(e.returned for e in events)
            lines += [
                f"Attacks mitigated and then back without a new attack ({RETURNED}): {back} of "
                f"{len(events)}.",
                "",
            ]
    text = "\n".join(lines) + "\n"
    atomic_write_bytes(out / "REPORT.md", text.encode())
    return text


def reproduce(
    names: list[str],
    *,
    out: Path,
    store: Path,
    quick: bool = False,
    jobs: int | None = None,
    threads: int | None = None,
    seeds: list[int] | None = None,
    data_dir: str | None = None,
    run: bool = True,
    progress: bool = True,
    command: str | None = None,
    overwrite: bool = False,
    backend: Literal["local", "ray"] = "local",
    device: str | None = None,
    ray_options: RayOptions | None = None,
) -> tuple[SweepReport | None, Path]:
    """Run the named results (`fig3`, ..., `all`, or spec files), then write the figures,
    tables and REPORT.md of the named results and, when a paper result is named, of every other
    paper result an earlier call wrote into `out` (so results reproduced one at a time build up
    one report); results never named get no folder and no row, even where they share finished
    runs with a named one (Fig. 3 and Fig. 6 do). With `run=False` only the outputs are (re)written.

    An existing `out/REPORT.md` that covers more finished runs than the new one is kept (a
    `FlwbcError`, before any run starts when even a complete sweep could not match it) unless
    `overwrite`. `backend`, `device` and `ray_options` say where the runs run (`run_sweep`)."""
    from flwbc.plots import require_matplotlib

    require_matplotlib()
    settings = load_settings()
    todo = plan(names, settings, quick=quick, seeds=seeds, data_dir=data_dir)
    # The paper's results share one REPORT.md, so reproducing them one by one into the same
    # folder builds it up; a user's spec files are reported beside them, or alone.
    named = targets(names)
    user_specs = [n for n in named if n not in RESULTS]
    bundled = ["all"] if len(user_specs) < len(named) else []
    everything = plan(bundled + user_specs, settings, quick=quick, seeds=seeds, data_dir=data_dir)
    planned = {r.key for runs in everything.runs.values() for r in runs}
    guard_report(out, len(planned), overwrite=overwrite)
    sweep = None
    if run:
        sweep = run_sweep(
            todo.ordered_runs(),
            store,
            jobs=jobs,
            threads=threads,
            progress=progress,
            desc="reproduce " + " ".join(s.id for s in todo.specs),
            backend=backend,
            device=device,
            ray_options=ray_options,
        )
    asked = {spec.id for spec in todo.specs}
    results = [
        res
        for res in (collect(spec, everything.runs[spec.id], store) for spec in everything.specs)
        if res.spec.id in asked or (out / res.spec.id).is_dir()  # named, or written before
    ]
    guard_report(out, len(_distinct_runs(results)[0]), overwrite=overwrite)
    for res in results:
        write_result(res, out)
    cmd = command or "flwbc reproduce " + " ".join(shlex.quote(n) for n in names)
    # plan() loads one spec per target, in order: pair each with the name it came from
    spec_files = {
        spec.id: name
        for spec, name in zip(everything.specs, targets(bundled + user_specs), strict=True)
        if name not in RESULTS
    }
    report(results, out, command=cmd, quick=quick, store=store, spec_files=spec_files)
    return sweep, out / "REPORT.md"

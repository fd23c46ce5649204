"""`flwbc matrix`: every attack against every defense, in one table and one heatmap.

A matrix is a spec (`flwbc.experiments.specs`) with two axes, `attack` and `defense`, whose
attack axis has a point `none`, the clean baseline (best `attack.name: honest`: the attackers
take part but send honest updates): every cell is a branch from one warm model, so the
attacked runs and the clean run of each defense share the warm model, the clients, the data
order and the participants of every round (a paired comparison). The bundled matrix is
`matrices/matrix.yaml`; a user's spec file with the same two axes works the same way.

What a cell measures depends on what the attack wants, read from the run itself:
- a backdoor (its records hold `backdoor_acc`): the backdoor success rate;
- the paper's targeted attack (eq. 3): the misclassification confidence on D_M (`target_conf`);
- any other attack (untargeted): the accuracy drop, the clean run's test accuracy (same
  defense, same round) minus the attacked run's (`flwbc.evaluation.accuracy_drop`).
Each is taken at the end of the attack window (the last adversarial round) and at the end of
the run, and for backdoors and eq. 3 the rounds after the window until the success falls
below one half (`rounds_until`; censored when it does not) say how long the attack persists.

Outputs in `--out`: `cells.csv` (one row per cell, rewritten every minute while runs finish),
`matrix.md` (the table, with the runtime and the command), `heatmap.png|svg`. Runs live in a
resumable store as for `reproduce`.
"""

from __future__ import annotations

import csv
import io
import json
import shlex
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from flwbc.errors import FlwbcError
from flwbc.evaluation.accuracy_drop import accuracy_drop
from flwbc.evaluation.trigger import baseline_metric, trigger_field
from flwbc.experiments.results import RETURNED, timing_seconds
from flwbc.experiments.specs import (
    RunSpec,
    Spec,
    deep_merge,
    expand,
    load_settings,
    load_spec,
)
from flwbc.experiments.sweep import SweepReport, is_finished, run_dir, run_sweep
from flwbc.metrics import attack_kind, rounds_until
from flwbc.runio import atomic_write_bytes, read_jsonl

if TYPE_CHECKING:
    from flwbc.experiments.ray_backend import RayOptions

MATRIX_DIR = resources.files("flwbc.experiments") / "matrices"
AXES = ("attack", "defense")
CLEAN = "none"
DEFAULT_MATRIX = "matrix"
"""The bundled matrix `flwbc matrix` runs when no spec is named."""
PERSIST_BELOW = 0.5
"""A backdoor's or eq. 3's success below this ends its persistence count."""
TABLES_EVERY = 60.0
"""Seconds between rewrites of cells.csv while a matrix runs (so an interrupted one leaves
it)."""


@dataclass
class Cell:
    """One attack against one defense (None where the run has not finished)."""

    attack: str
    defense: str
    kind: str | None = None
    """backdoor, targeted, untargeted or clean."""
    metric: str | None = None
    window_end: int | None = None
    effect: float | None = None
    """At the window's end: backdoor success, D_M confidence, or accuracy drop (fraction)."""
    final_effect: float | None = None
    window_mean: float | None = None
    """The same success measure averaged over the rounds of the last attack window (less noisy
    than one round's value)."""
    baseline: float | None = None
    """Backdoors: the clean run's success rate of the same trigger at the window's end (some
    images carrying a trigger are classified as its target without any attack)."""
    baseline_mean: float | None = None
    """The same over the window's rounds."""
    test_acc: float | None = None
    """Test accuracy at the window's end."""
    final_acc: float | None = None
    persists: int | None = None
    """Rounds after the window until the success is below one half (backdoor, eq. 3)."""
    persists_censored: bool = False
    """True: still at or above one half at the last round seen (persists is then a bound)."""
    came_back: bool = False
    """Below one half after `persists` rounds, then back above it without a new attack."""
    seconds: float | None = None
    run: str | None = None
    flag_tp: int | None = None
    """Over the attack window, for a rule that records detection: attacker rows it flagged."""
    flag_fp: int | None = None
    """Benign rows it flagged over the attack window."""
    flag_fn: int | None = None
    """Attacker rows it did not flag over the attack window."""
    seeds: int = 1
    """Seeds the cell's values are averaged over."""


def bundled_matrices() -> list[str]:
    """The names of the bundled matrices (`matrices/NAME.yaml`)."""
    return sorted(
        p.name.removesuffix(".yaml") for p in MATRIX_DIR.iterdir() if p.name.endswith(".yaml")
    )


def bundled_help() -> str:
    """What each bundled matrix crosses, read from its spec, the default first (`flwbc matrix
    --help`): `matrix (the default): 15 attacks and the clean run against 6 defenses: FedAvg,
    median, ...; defenses: ...`."""
    import yaml

    parts = []
    for name in sorted(bundled_matrices(), key=lambda n: n != DEFAULT_MATRIX):
        axes = yaml.safe_load((MATRIX_DIR / f"{name}.yaml").read_text())["axes"]
        attacks = [a for a in axes["attack"] if a != CLEAN]
        defenses = list(axes["defense"])
        label = f"{name} (the default)" if name == DEFAULT_MATRIX else name
        parts.append(
            f"{label}: {len(attacks)} attacks and the clean run against {len(defenses)} "
            f"defenses: {', '.join(defenses)}"
        )
    return "; ".join(parts)


def matrix_spec(name: str | None) -> Spec:
    """A bundled matrix by name (None: `matrix`) or a user's spec file, checked for its axes."""
    name = name or DEFAULT_MATRIX
    path = str(MATRIX_DIR / f"{name}.yaml") if name in bundled_matrices() else name
    if not path.endswith((".yaml", ".yml")):
        raise FlwbcError(
            f"unknown matrix '{name}'; choose one of {', '.join(bundled_matrices())} or give a "
            "spec file (.yaml)"
        )
    spec = load_spec(path)
    if set(spec.axes) != set(AXES):
        raise FlwbcError(
            f"spec {spec.id}: a matrix has exactly the axes attack and defense, not "
            f"{', '.join(spec.axes)}; for further axes (settings, attacker fractions, seeds "
            "with intervals) write a bench spec (`flwbc bench`, docs/bench.md)"
        )
    if CLEAN not in spec.axes["attack"]:
        raise FlwbcError(
            f"spec {spec.id}: the attack axis needs a point '{CLEAN}' (the clean baseline, e.g. "
            "attack.name: honest) to compare with"
        )
    return spec


def with_baselines(spec: Spec) -> Spec:
    """`spec` with its clean point measuring every backdoor's trigger (the `trigger` metric),
    so each backdoor's cell has its baseline; backdoors that share a name but not their options
    get none (their fields would collide)."""
    sections = [
        deep_merge(spec.base, spec.branch.config, point).get("attack", {})
        for a, point in spec.axes["attack"].items()
        if a != CLEAN
    ]
    metrics = deep_merge(spec.base, spec.branch.config).get("eval", {}).get("metrics", [])
    metric = baseline_metric(sections, skip_ambiguous=True, metrics=metrics)
    if metric is None:
        return spec
    clean = spec.axes["attack"][CLEAN]
    given = clean.get("eval", {}).get("metrics", [])
    axes = {**spec.axes, "attack": dict(spec.axes["attack"])}
    axes["attack"][CLEAN] = deep_merge(clean, {"eval": {"metrics": [*given, metric]}})
    return spec.model_copy(update={"axes": axes})


def matrix_runs(spec: Spec, *, quick: bool = False, data_dir: str | None = None) -> list[RunSpec]:
    """The matrix's runs, its clean runs measuring the backdoors' baselines
    (`with_baselines`); each clean run also answers to the key it had before clean runs
    measured them, so a store written then is still used (its baselines are then unknown)."""
    settings = load_settings()
    runs = expand(with_baselines(spec), settings, quick=quick, data_dir=data_dir)
    earlier = {
        json.dumps(r.coords, sort_keys=True): r
        for r in expand(spec, settings, quick=quick, data_dir=data_dir)
        if r.coords.get("attack") == CLEAN
    }
    out = []
    for r in runs:
        before = earlier.get(json.dumps(r.coords, sort_keys=True))
        if before is not None and before.key != r.key:
            r = replace(r, aliases=(*r.aliases, before.key, *before.aliases))
        out.append(r)
    return out


def _value(rec: dict[str, Any] | None, field: str) -> float | None:
    return None if rec is None else rec.get(field)


def _same_round(clean: list[dict[str, Any]], record: dict[str, Any]) -> dict[str, Any] | None:
    """The clean run's record of `record`'s round (None if it has none)."""
    same = [r for r in clean if r["round"] == record["round"]]
    return same[0] if same else None


def _drop(clean: list[dict[str, Any]], record: dict[str, Any]) -> float | None:
    """The clean run's test accuracy minus `record`'s, in the same round."""
    return accuracy_drop(_same_round(clean, record), record)


def collect_cells(spec: Spec, runs: list[RunSpec], store: Path) -> list[Cell]:
    """Every cell of the matrix, measured from the store's finished runs; a cell run with
    several seeds is measured per seed against the clean run of the same seed and averaged
    (`Cell.seeds` says over how many; `flwbc bench` gives intervals)."""
    loaded: dict[tuple[str, str, int], tuple[RunSpec, list[dict[str, Any]], Path]] = {}
    for run in runs:
        if run.role != "branch":
            continue
        path = run_dir(store, run)
        key = (run.coords["attack"], run.coords["defense"], run.coords["seed"])
        records = read_jsonl(path / "rounds.jsonl") if is_finished(path) else []
        loaded[key] = (run, records, path)
    seeds = sorted({k[2] for k in loaded})
    cells = []
    for attack in spec.axes["attack"]:
        for defense in spec.axes["defense"]:
            per_seed = [
                _measure(
                    attack, defense, *loaded[(attack, defense, s)], loaded[(CLEAN, defense, s)][1]
                )
                for s in seeds
                if (attack, defense, s) in loaded
            ]
            cells.append(_average(attack, defense, [c for c in per_seed if c.kind is not None]))
    return cells


def _measure(
    attack: str,
    defense: str,
    run: RunSpec,
    records: list[dict[str, Any]],
    path: Path,
    clean: list[dict[str, Any]],
) -> Cell:
    """One seed's cell from its run's records (`clean`: the clean run of the same seed)."""
    cell = Cell(attack, defense)
    if not records:
        return cell
    cell.kind, cell.metric = attack_kind(run.config.get("attack", {}), records)
    cell.seconds, cell.run = timing_seconds(path), path.name
    adv = [i for i, r in enumerate(records) if r["adversarial"]]
    end = adv[-1] if adv else len(records) - 1
    cell.window_end = records[end]["round"]
    cell.test_acc = _value(records[end], "test_acc")
    cell.final_acc = _value(records[-1], "test_acc")
    window = records[_window_start(records, end) : end + 1]
    flags = [r["detection"] for r in window if "detection" in r]
    if flags:
        cell.flag_tp, cell.flag_fp, cell.flag_fn = (
            sum(d[k] for d in flags) for k in ("tp", "fp", "fn")
        )
    if cell.kind == "untargeted":
        cell.effect = _drop(clean, records[end])
        cell.final_effect = _drop(clean, records[-1])
        cell.window_mean = _mean([_drop(clean, r) for r in window])
    elif cell.kind != "clean":
        assert cell.metric is not None
        cell.effect = _value(records[end], cell.metric)
        cell.final_effect = _value(records[-1], cell.metric)
        cell.window_mean = _mean([_value(r, cell.metric) for r in window])
        if cell.kind == "backdoor":
            field = trigger_field(run.config.get("attack", {}).get("name", ""))
            cell.baseline = _value(_same_round(clean, records[end]), field)
            cell.baseline_mean = _mean([_value(_same_round(clean, r), field) for r in window])
        windows = rounds_until(records, cell.metric, PERSIST_BELOW)
        if windows:  # the last attack window's persistence
            last = windows[-1]
            cell.persists_censored = last["rounds"] is None
            cell.persists = last["observed"] if cell.persists_censored else last["rounds"]
            cell.came_back = last["sustained"] != last["rounds"] and not cell.persists_censored
    return cell


AVERAGED = (
    "effect", "final_effect", "window_mean", "baseline", "baseline_mean", "test_acc", "final_acc",
)  # fmt: skip


def _average(attack: str, defense: str, cells: list[Cell]) -> Cell:
    """One cell over seeds: the mean of each measure, the longest persistence (censored if
    any seed's is), flags and seconds summed; one seed's cell as it is."""
    if len(cells) <= 1:
        return cells[0] if cells else Cell(attack, defense)
    first = cells[0]
    out = Cell(attack, defense, kind=first.kind, metric=first.metric, window_end=first.window_end)
    for name in AVERAGED:
        setattr(out, name, _mean([getattr(c, name) for c in cells]))
    known = [c.persists for c in cells if c.persists is not None]
    out.persists = max(known) if known else None
    out.persists_censored = any(c.persists_censored for c in cells)
    out.came_back = any(c.came_back for c in cells)
    out.seconds = sum(c.seconds or 0.0 for c in cells)
    out.run = ";".join(c.run or "" for c in cells)
    for name in ("flag_tp", "flag_fp", "flag_fn"):
        values = [getattr(c, name) for c in cells]
        setattr(out, name, None if None in values else sum(values))
    out.seeds = len(cells)
    return out


def _window_start(records: list[dict[str, Any]], end: int) -> int:
    """The position of the first round of the attack window that ends at position `end`."""
    start = end
    while start > 0 and records[start - 1]["adversarial"]:
        start -= 1
    return start


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def cells_csv(cells: list[Cell]) -> str:
    buf = io.StringIO()
    names = list(asdict(cells[0]))
    w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    w.writeheader()
    for c in cells:
        w.writerow({k: ("" if v is None else v) for k, v in asdict(c).items()})
    return buf.getvalue()


def _cell_text(c: Cell) -> str:
    if c.kind is None:
        return "not run"
    if c.kind == "clean":
        return f"acc {_pct(c.test_acc)}"
    head = f"{_pct(c.effect)} (mean {_pct(c.window_mean)})"
    if c.baseline is not None:
        head += f" [clean {_pct(c.baseline)}]"
    succeeded = c.effect is not None and c.effect >= PERSIST_BELOW
    if c.kind in ("backdoor", "targeted") and c.persists is not None and succeeded:
        mark = RETURNED if c.came_back else ""
        head += f", {'>' if c.persists_censored else ''}{c.persists}{mark} r"
    return f"{head}; acc {_pct(c.test_acc)}"


def matrix_markdown(spec: Spec, cells: list[Cell], *, command: str) -> str:
    """The matrix as a Markdown table, with what each number means and the runtime."""
    by = {(c.attack, c.defense): c for c in cells}
    defenses = list(spec.axes["defense"])
    done = [c for c in cells if c.kind is not None]
    compute = sum(c.seconds or 0.0 for c in done)
    kinds = {c.attack: c.kind for c in done if c.kind}
    lines = [
        f"# {spec.title}",
        "",
        spec.description.strip(),
        "",
        f"Command: `{command}`. Cells finished: {len(done)} of {len(cells)}; compute "
        f"{compute / 60:.1f} min (the runs' own times)."
        + (
            f" Values are means over {max(c.seeds for c in done)} seeds (flwbc bench gives "
            "their intervals)."
            if any(c.seeds > 1 for c in done)
            else ""
        ),
        "",
        "Each cell: the attack's success at the end of the attack window in percent (in "
        "parentheses its mean over the window's rounds), then the test accuracy at the window's "
        "end. Success is the backdoor success rate for backdoors, the target probability on D_M "
        f"for eq. 3 (each, when at least {PERSIST_BELOW:.0%} at the window's end, followed by "
        f"the rounds after the window until it fell below {PERSIST_BELOW:.0%}: '>k' if it never "
        f"did in the k rounds seen, 'k{RETURNED}' if it came back above later), and the accuracy "
        "drop against the same defense without attack (points) for the rest. A backdoor's "
        "'[clean x]' is its baseline: the same trigger's success rate on the clean run at the "
        "window's end (images carrying the trigger that the model classifies as the target "
        "without any attack).",
        "",
        *_table(
            ["attack", "kind", *defenses],
            [
                [a, kinds.get(a) or "", *(_cell_text(by[(a, d)]) for d in defenses)]
                for a in spec.axes["attack"]
            ],
        ),
    ]
    detecting = [d for d in defenses if any(c.flag_tp is not None for c in cells if c.defense == d)]
    if detecting:
        lines += [
            "",
            "Detection over the attack window, for the rules that flag clients: attacker rows "
            "flagged / benign rows flagged / attacker rows missed, summed over the window's "
            "rounds (in the clean row the attackers send honest updates).",
            "",
            *_table(
                ["attack", *detecting],
                [[a, *(_flag_text(by[(a, d)]) for d in detecting)] for a in spec.axes["attack"]],
            ),
        ]
    return "\n".join(lines) + "\n"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _flag_text(c: Cell) -> str:
    if c.kind is None:
        return "not run"
    return "–" if c.flag_tp is None else f"{c.flag_tp}/{c.flag_fp}/{c.flag_fn}"


PANELS = {
    "untargeted": (
        "accuracy drop (points)", "Blues",
        "untargeted: accuracy drop against the clean run at the window's end",
    ),
    "backdoor": ("backdoor success (%)", "Reds", "backdoors: success rate at the window's end"),
    "targeted": (
        "D_M target prob. (%)", "Purples",
        "eq. 3: target probability on D_M at the window's end",
    ),
}  # fmt: skip
"""Per kind of attack, its heatmap panel's one unit, colour map and title."""


def heatmap_panels(spec: Spec, cells: list[Cell]) -> list[tuple[str, list[str]]]:
    """The heatmap's panels: (kind, its attacks) in the order of `PANELS`, one unit each; the
    attacks with no finished cell yet last, under the kind `not run`."""
    kind: dict[str, str] = {}
    for c in cells:
        if c.kind is not None and c.attack != CLEAN:
            kind.setdefault(c.attack, c.kind)
    attacks = [a for a in spec.axes["attack"] if a != CLEAN]
    order = [*PANELS, *sorted({k for k in kind.values()} - set(PANELS)), "not run"]
    panels = [(k, [a for a in attacks if kind.get(a, "not run") == k]) for k in order]
    return [(k, group) for k, group in panels if group]


def plot_matrix(spec: Spec, cells: list[Cell], prefix: Path) -> list[Path]:
    """Heatmap of the attacks' success at the window's end, one panel per kind of attack so
    that each colour scale has one unit (`PANELS`: accuracy drop, backdoor success, D_M
    confidence), each cell annotated with its value and the test accuracy. Attacks are rows
    and defenses columns (panels stacked), or the other way round (panels side by side) when
    there are more defenses than attacks, so that a wide matrix stays readable."""
    import numpy as np

    from flwbc.plots import _finish, _pyplot

    plt = _pyplot()
    defenses = list(spec.axes["defense"])
    by = {(c.attack, c.defense): c for c in cells}
    clean = {d: by[(CLEAN, d)].test_acc for d in defenses}
    defense_labels = [
        f"{d}\n(clean {_pct(clean[d])}%)" if clean[d] is not None else d for d in defenses
    ]
    panels = heatmap_panels(spec, cells)
    n_attacks = sum(len(group) for _, group in panels)
    flip = len(defenses) > n_attacks
    sizes = [len(group) for _, group in panels]
    if flip:
        fig, axes = plt.subplots(
            1, len(panels), squeeze=False, gridspec_kw={"width_ratios": sizes},
            figsize=(1.5 * n_attacks + 2.0 * len(panels) + 2.5, 0.55 * len(defenses) + 1.8),
        )  # fmt: skip
    else:
        fig, axes = plt.subplots(
            len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": sizes},
            figsize=(1.5 * len(defenses) + 3.5, 0.55 * n_attacks + 1.4 * len(panels) + 0.6),
        )  # fmt: skip
    for p, (kind, attacks) in enumerate(panels):
        ax = axes[0][p] if flip else axes[p][0]
        attack_labels = [f"{a} [{kind}]" for a in attacks]
        rows, cols = (defenses, attacks) if flip else (attacks, defenses)
        row_labels, col_labels = (
            (defense_labels, attack_labels) if flip else (attack_labels, defense_labels)
        )

        def cell(i: int, j: int, rows: list[str] = rows, cols: list[str] = cols) -> Cell:
            return by[(cols[j], rows[i])] if flip else by[(rows[i], cols[j])]

        grid = np.full((len(rows), len(cols)), np.nan)
        for i in range(len(rows)):
            for j in range(len(cols)):
                v = cell(i, j).effect
                grid[i, j] = np.nan if v is None else 100 * max(v, 0.0)
        unit, cmap, title = PANELS.get(kind, (kind, "Greys", kind))
        # success measures span 0-100%; an accuracy drop is scaled to the largest one seen
        top = 100.0 if kind != "untargeted" else max(1.0, float(np.nan_to_num(grid).max()))
        img = ax.imshow(grid, cmap=cmap, vmin=0.0, vmax=top, aspect="auto")
        if flip:
            ax.set_xticks(range(len(cols)), col_labels, fontsize=8, rotation=30, ha="right")
            ax.set_yticks(range(len(rows)), row_labels if p == 0 else [""] * len(rows))
        else:
            last = p == len(panels) - 1
            ax.set_xticks(range(len(cols)), col_labels if last else [""] * len(cols), fontsize=8)
            ax.set_yticks(range(len(rows)), row_labels)
        ax.tick_params(axis="y", labelsize=8)
        for i in range(len(rows)):
            for j in range(len(cols)):
                c = cell(i, j)
                text = "not run" if c.kind is None else f"{_pct(c.effect)}\nacc {_pct(c.test_acc)}"
                dark = not np.isnan(grid[i, j]) and grid[i, j] > 0.6 * top
                ax.text(
                    j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if dark else "black",
                )  # fmt: skip
        ax.set_title(title, fontsize=9)
        if kind != "not run":
            fig.colorbar(img, ax=ax, fraction=0.05, label=unit)
    return _finish(plt, fig, prefix, spec.title)


def write_matrix(spec: Spec, cells: list[Cell], out: Path, *, command: str) -> list[Path]:
    """cells.csv, matrix.md and the heatmap into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "cells.csv", cells_csv(cells).encode())
    md = matrix_markdown(spec, cells, command=command)
    atomic_write_bytes(out / "matrix.md", md.encode())
    return [out / "cells.csv", out / "matrix.md", *plot_matrix(spec, cells, out / "heatmap")]


def finished_cells(path: Path) -> int:
    """How many finished cells an existing cells.csv holds (0: none there)."""
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    except FileNotFoundError:
        return 0
    return sum(1 for r in rows if r.get("kind"))


def run_matrix(
    name: str | None,
    *,
    store: Path,
    out: Path,
    quick: bool = False,
    jobs: int | None = None,
    threads: int | None = None,
    data_dir: str | None = None,
    run: bool = True,
    progress: bool = True,
    command: str | None = None,
    overwrite: bool = False,
    backend: Literal["local", "ray"] = "local",
    device: str | None = None,
    ray_options: RayOptions | None = None,
) -> tuple[SweepReport | None, list[Path]]:
    """Run the matrix's unfinished runs (resumably), then write its table and heatmap. An
    existing `cells.csv` in `out` with more finished cells is kept unless `overwrite`.
    `backend`, `device` and `ray_options` say where the runs run (`run_sweep`)."""
    from flwbc.plots import require_matplotlib

    require_matplotlib()
    spec = matrix_spec(name)
    runs = matrix_runs(spec, quick=quick, data_dir=data_dir)
    before = finished_cells(out / "cells.csv")
    if not overwrite and before > len([r for r in runs if r.role == "branch"]):
        raise FlwbcError(
            f"{out / 'cells.csv'} holds {before} finished cells, more than this matrix has; "
            "choose another --out or pass --overwrite"
        )

    def partial() -> None:  # cells.csv while runs finish, never with fewer cells than before
        cells = collect_cells(spec, runs, store)
        if overwrite or sum(1 for c in cells if c.kind is not None) >= before:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(out / "cells.csv", cells_csv(cells).encode())

    sweep = None
    if run:
        sweep = run_sweep(
            runs,
            store,
            jobs=jobs,
            threads=threads,
            progress=progress,
            desc=f"matrix {spec.id}",
            backend=backend,
            device=device,
            ray_options=ray_options,
            on_progress=partial,
            progress_every=TABLES_EVERY,
        )
    cells = collect_cells(spec, runs, store)
    done = sum(1 for c in cells if c.kind is not None)
    if not overwrite and before > done:
        raise FlwbcError(
            f"{out / 'cells.csv'} holds {before} finished cells and this would replace it with "
            f"{done}; point --runs at the store that holds its runs, or pass --overwrite"
        )
    cmd = command or "flwbc matrix " + shlex.quote(name or "matrix")
    return sweep, write_matrix(spec, cells, out, command=cmd)

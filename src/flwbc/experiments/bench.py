"""`flwbc bench`: every defense ranked by its worst case over every attack, across settings
(data heterogeneity, attacker fraction, how attackers are drawn), with seeds and intervals.

A bench spec (`benches/NAME.yaml`, or a user's file; docs/bench.md) declares:
- `common`: the config every run shares (dataset, model, federation, local training, eval);
- `settings`: named partial configs, listed, and/or `cross`: dimensions of named points whose
  product gives settings named `a/b` (e.g. heterogeneity × attackers), each point's name kept
  as the setting's coordinate on its dimension;
- `regimes`: how attacks are measured. `untargeted`: a training from scratch (or from a warm
  model) with the attack in every round of `window`, measured by the test accuracy at the last
  round, a fixed round budget (ByzFL's protocol); `targeted` (backdoors and eq. 3): a window of
  attack rounds from a warm model, then rounds without attack, measured by the attack's
  success over the window minus the same measurement on the clean cell (its baseline), and by
  its persistence after the window. Each regime lists its attacks (`all`: every registered
  attack of its kind, plug-ins included) and always has the clean cell `none` (the attackers
  take part but send honest updates);
- `defenses`: named partial configs (server rule, pre-aggregation chain, client defenses),
  each optionally with an options `grid` whose variants compete, the best one ranked;
- `seeds`, and `confirm`: more seeds for each defense's `worst` attacks in each regime and
  setting after the first seed screened every cell, so intervals are spent where worst cases are
  decided.

Every run is a branch of the spec-independent run store (`flwbc.experiments.store`), keyed by
its config, so a run shared by two specs (e.g. the built-ins' leaderboard and a user's
evaluation of one more defense) is trained once. Outputs: `cells.csv` (one row per run, every
coordinate and measure), `summary.csv` (per cell: mean and 95% t-interval over seeds),
`worst.csv` (per regime, setting and defense: the worst attack), `leaderboard.md` and one
heatmap per regime and unit.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from flwbc.config import make_config
from flwbc.errors import FlwbcError
from flwbc.evaluation.trigger import baseline_metric, is_backdoor, trigger_field
from flwbc.experiments.results import timing_seconds
from flwbc.experiments.specs import (
    RunSpec,
    _read_yaml,
    _validate,
    deep_merge,
    run_key,
    run_label,
    substitute,
)
from flwbc.experiments.store import WALL, is_finished, run_dir
from flwbc.metrics import rounds_until
from flwbc.runio import read_json, read_jsonl

BENCH_DIR = resources.files("flwbc.experiments") / "benches"
CLEAN = "none"
"""The clean cell of every regime: the attackers take part but send honest updates."""
PERSIST_BELOW = 0.5
CONFIDENCE = 0.95
DIVERGED_LOSS = 1e6
"""A training loss above this (or a non-finite one) marks a run as diverged."""
GRID = "grid"
"""A defense's key for its options grid: `{dotted.path: [values]}`."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BenchSetting(_Strict):
    title: str = ""
    coords: dict[str, str] = Field(
        default_factory=dict, description="the setting's point on named dimensions"
    )
    vars: dict[str, Any] = Field(
        default_factory=dict, description="values of `$name` strings in attacks and defenses"
    )
    config: dict[str, Any] = Field(default_factory=dict)


class Regime(_Strict):
    kind: Literal["untargeted", "targeted"]
    title: str = ""
    warmup_rounds: int = Field(0, ge=0, description="0: every run trains from scratch")
    rounds: int = Field(ge=1, description="rounds after the warm-up (the budget)")
    window: tuple[int, int] | None = Field(
        None, description="first and last attack round; default: every round"
    )
    config: dict[str, Any] = Field(default_factory=dict)
    settings: list[str] | None = Field(
        None, description="the settings this regime runs in; default: all of the spec's"
    )
    attacks: Literal["all"] | list[str] | dict[str, dict[str, Any]] = "all"
    """`all`, a list of registered attack names, or named partial configs."""

    @model_validator(mode="after")
    def _window(self) -> Regime:
        if self.window is not None and not 1 <= self.window[0] <= self.window[1] <= self.rounds:
            raise ValueError(f"window {list(self.window)} must lie within 1..{self.rounds}")
        return self


class Confirm(_Strict):
    seeds: list[int] = Field(min_length=1)
    worst: int = Field(2, ge=1, description="attacks per defense, regime and setting")


class BenchQuick(_Strict):
    settings: list[str] | None = None
    regimes: list[str] | None = None
    confirm: bool = False


class BenchSpec(_Strict):
    id: str
    title: str
    description: str = ""
    common: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, BenchSetting] = Field(default_factory=dict)
    cross: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    regimes: dict[str, Regime] = Field(min_length=1)
    defenses: dict[str, dict[str, Any]] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    confirm: Confirm | None = None
    quick: BenchQuick = Field(default_factory=BenchQuick)

    _families: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _some_setting(self) -> BenchSpec:
        if not self.settings and not self.cross:
            raise ValueError("give settings or cross (or both)")
        return self

    @model_validator(mode="after")
    def _grids(self) -> BenchSpec:
        expanded: dict[str, dict[str, Any]] = {}
        for name, point in self.defenses.items():
            variants = expand_grid(name, point)
            for variant in variants:
                if variant in expanded:
                    raise ValueError(f"two defenses are named {variant!r} (a grid's variants?)")
            expanded.update(variants)
            if GRID in point:
                self._families.update({v: name for v in variants})
        self.defenses = expanded
        return self

    @property
    def families(self) -> dict[str, str]:
        """Each grid variant's defense: the name the grid was declared under."""
        return dict(self._families)

    def all_settings(self) -> dict[str, tuple[BenchSetting, dict[str, str]]]:
        """Every setting with its coordinates: the listed ones, then the cross's product."""
        out: dict[str, tuple[BenchSetting, dict[str, str]]] = {
            name: (s, dict(s.coords)) for name, s in self.settings.items()
        }
        dims = list(self.cross)
        for combo in (
            [] if not dims else itertools.product(*[list(self.cross[d].items()) for d in dims])
        ):
            name = "/".join(p for p, _ in combo)
            config = deep_merge(*[c for _, c in combo])
            variables = config.pop("vars", {})
            coords = {d: p for d, (p, _) in zip(dims, combo, strict=True)}
            out[name] = (BenchSetting(title=name, vars=variables, config=config), coords)
        return out


def expand_grid(name: str, point: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A defense declared with `grid: {dotted.path: [values]}` as one variant per combination
    of the values, named `NAME [key=value, ...]` (the path's last key, or the whole path where
    two paths end alike); a defense without a grid as itself. The ranking keeps each defense's
    best variant (ByzFL's choice of hyperparameters by worst case)."""
    grid = point.get(GRID)
    if grid is None:
        return {name: point}
    if not (
        isinstance(grid, dict) and grid and all(isinstance(v, list) and v for v in grid.values())
    ):
        raise ValueError(
            f"defense {name!r}: grid maps dotted option paths to non-empty lists of values"
        )
    base = {k: v for k, v in point.items() if k != GRID}
    paths = [str(p) for p in grid]
    lasts = [p.rsplit(".", 1)[-1] for p in paths]
    labels = lasts if len(set(lasts)) == len(lasts) else paths
    out: dict[str, dict[str, Any]] = {}
    for values in itertools.product(*(grid[p] for p in paths)):
        over: dict[str, Any] = {}
        for path, value in zip(paths, values, strict=True):
            *head, last = path.split(".")
            node = over
            for key in head:
                node = node.setdefault(key, {})
            node[last] = value
        label = ", ".join(f"{k}={v}" for k, v in zip(labels, values, strict=True))
        variant = f"{name} [{label}]"
        if variant in out:
            raise ValueError(f"two defenses are named {variant!r} (a grid's values alike)")
        out[variant] = deep_merge(base, over)
    return out


def coordinate_names(spec: BenchSpec) -> list[str]:
    """The settings' named dimensions: the listed settings' `coords`, then the cross's."""
    names = [d for s in spec.settings.values() for d in s.coords]
    return list(dict.fromkeys([*names, *spec.cross]))


def attack_kind_of(name: str) -> str:
    """A registered attack's regime: `clean` (honest), `targeted` (a backdoor, whose runs
    record a trigger's success, or the paper's eq. 3) or `untargeted`."""
    from flwbc.attacks import ATTACKS

    goal = ATTACKS.lookup(name).goal
    return "clean" if goal == "none" else goal


def regime_attacks(regime: Regime) -> dict[str, dict[str, Any]]:
    """The regime's attacks as named partial configs, the clean cell first."""
    from flwbc.attacks import ATTACKS

    if regime.attacks == "all":
        names = [n for n in sorted(ATTACKS) if attack_kind_of(n) == regime.kind]
        points = {n: {"attack": {"name": n}} for n in names}
    elif isinstance(regime.attacks, list):
        points = {n: {"attack": {"name": n}} for n in regime.attacks}
    else:
        points = dict(regime.attacks)
    return {
        CLEAN: {"attack": {"name": "honest"}},
        **{k: v for k, v in points.items() if k != CLEAN},
    }


def _attack_name(point: dict[str, Any]) -> str:
    return str(point.get("attack", {}).get("name", "targeted"))


def bundled_benches() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml") for p in BENCH_DIR.iterdir() if p.name.endswith(".yaml")
    )


def load_bench(name: str) -> BenchSpec:
    """A bundled bench by name or a user's spec file (.yaml)."""
    if name in bundled_benches():
        path: Any = BENCH_DIR / f"{name}.yaml"
    elif name.endswith((".yaml", ".yml")):
        path = Path(name)
    else:
        raise FlwbcError(
            f"unknown bench '{name}'; choose one of {', '.join(bundled_benches())} or give a "
            "spec file (.yaml)"
        )
    return _validate(BenchSpec, _read_yaml(path, "bench spec"), f"bench spec {path}")


def expand_bench(
    spec: BenchSpec,
    *,
    seeds: list[int] | None = None,
    quick: bool = False,
    defenses: list[str] | None = None,
    cells: set[tuple[str, str, str, str]] | None = None,
    data_dir: str | None = None,
) -> list[RunSpec]:
    """The runs of `spec` for `seeds` (default the spec's): per regime with a warm-up, one
    warm-up per setting and seed; one branch per (regime, setting, attack, defense, seed).
    `defenses` restricts the defenses; `cells` restricts to (regime, setting, attack, defense).
    Every config is validated here, plug-in options included, so a bad spec fails before
    anything runs or any run directory is made."""
    from flwbc.experiment import check_plugin_options

    all_settings = spec.all_settings()
    setting_names = spec.quick.settings if quick and spec.quick.settings else list(all_settings)
    regime_names = spec.quick.regimes if quick and spec.quick.regimes else list(spec.regimes)
    where = "quick.settings: " if quick and spec.quick.settings else ""
    for s in setting_names:
        if s not in all_settings:
            raise FlwbcError(
                f"bench {spec.id}: {where}unknown setting '{s}'; the spec defines "
                f"{', '.join(all_settings)}"
            )
    for r in regime_names:
        if r not in spec.regimes:
            where = "quick.regimes: " if quick and spec.quick.regimes else ""
            raise FlwbcError(f"bench {spec.id}: {where}unknown regime '{r}'")
        for s in spec.regimes[r].settings or []:
            if s not in all_settings:
                raise FlwbcError(f"bench {spec.id}: regime {r}: unknown setting '{s}'")
    chosen = {d: spec.defenses[d] for d in (defenses or list(spec.defenses))}
    extra: dict[str, Any] = {"data": {"dir": data_dir}} if data_dir else {}
    runs: dict[str, RunSpec] = {}
    for rname in regime_names:
        regime = spec.regimes[rname]
        attacks = regime_attacks(regime)
        start, end = regime.window or (1, regime.rounds)
        for sname in setting_names:
            if regime.settings is not None and sname not in regime.settings:
                continue
            setting, coords = all_settings[sname]
            base = deep_merge(spec.common, setting.config, regime.config, extra)
            where = f"bench {spec.id}, setting {sname}"
            schedule = base.get("attack", {}).get("schedule")
            window: dict[str, Any] = {"options": {"start": start, "end": end}}
            if not schedule:  # a setting that says nothing of when: every round of the window
                window["name"] = "continuous"
            # each backdoor's trigger as its attacked cells configure it (options merged)
            baselines = baseline_metric(
                (
                    deep_merge(base, substitute(p, setting.vars, where)).get("attack", {})
                    for p in attacks.values()
                ),
                metrics=base.get("eval", {}).get("metrics", []),
            )
            for seed in seeds or spec.seeds:
                parent: RunSpec | None = None
                if regime.warmup_rounds:
                    # no attack section: settings that differ only in their attackers share it
                    warm = deep_merge(
                        {k: v for k, v in base.items() if k != "attack"},
                        {
                            "seed": seed,
                            "federation": {"rounds": regime.warmup_rounds},
                            "attack": {"enabled": False},
                        },
                    )
                    wkey = run_key(warm, None)
                    parent = runs.setdefault(
                        wkey,
                        RunSpec(
                            wkey,
                            run_label(warm, "warmup"),
                            warm,
                            regime.warmup_rounds,
                            role="warmup",
                            coords={"regime": rname, "setting": sname, "seed": seed},
                        ),
                    )
                for (aname, apoint), (dname, dpoint) in itertools.product(
                    attacks.items(), chosen.items()
                ):
                    if cells is not None and (rname, sname, aname, dname) not in cells:
                        continue
                    cfg = deep_merge(
                        base,
                        {"attack": {"schedule": window}},
                        substitute(apoint, setting.vars, where),
                        substitute(dpoint, setting.vars, where),
                        {"seed": seed, "federation": {"rounds": regime.rounds}},
                    )
                    if aname == CLEAN and baselines:  # after the spec's own metrics
                        own = cfg.get("eval", {}).get("metrics", [])
                        cfg = deep_merge(cfg, {"eval": {"metrics": [*own, baselines]}})
                    check_plugin_options(make_config(cfg))
                    key = run_key(cfg, parent.key if parent else None)
                    cell_coords = {
                        "regime": rname,
                        "setting": sname,
                        **coords,
                        "attack": aname,
                        "defense": dname,
                        "seed": seed,
                    }
                    if key in runs:  # the same run is another cell too (e.g. FedAvg ignores $f)
                        runs[key].also.append(cell_coords)
                        continue
                    runs.setdefault(
                        key,
                        RunSpec(
                            key,
                            run_label(cfg, "branch"),
                            cfg,
                            regime.rounds,
                            parent=parent.key if parent else None,
                            coords=cell_coords,
                        ),
                    )
    return list(runs.values())


@dataclass
class BenchCell:
    """One run: its coordinates and what it measured (None where it has not finished)."""

    regime: str
    setting: str
    attack: str
    defense: str
    seed: int
    kind: str
    """untargeted, targeted or clean."""
    acc: float | None = None
    """Test accuracy at the last round (untargeted) or at the window's end (targeted)."""
    acc_drop: float | None = None
    """The clean cell's acc (same defense, setting, seed) minus this one's."""
    success: float | None = None
    """Targeted: the attack's success (backdoor_acc, or D_M's target_acc for eq. 3) averaged over
    the window's rounds."""
    baseline: float | None = None
    """Targeted: the same measurement on the clean cell over the same rounds."""
    effect: float | None = None
    """Targeted: success minus baseline."""
    persists: int | None = None
    persists_censored: bool = False
    diverged: bool = False
    """The run's training loss became non-finite or exceeded `DIVERGED_LOSS` in some round.
    Under attack that is the attack's doing (the accuracy it leaves is measured as any other)."""
    clean_diverged: bool = False
    """The clean cell of the same defense, setting and seed diverged: the defense is unstable
    without any attack there, so `acc_drop`, `baseline` and `effect` are not measured (None)."""
    seconds: float | None = None
    """The run's own compute: its rounds' training and evaluation (timings.jsonl)."""
    wall: float | None = None
    """The run's wall time as its sweep saw it, start to end (wall.json; None if unknown)."""
    run: str | None = None
    coords: dict[str, str] = field(default_factory=dict)
    """The setting's coordinates on the spec's cross dimensions."""


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _success_field(attack_cfg: dict[str, Any]) -> tuple[str, str]:
    """(field in the attacked run, field in the clean run) of a targeted attack's success: a
    share of inputs classified as the attacker's target for every attack, so the regime has one
    unit. For eq. 3 that is D_M's share classified as the target (`target_acc`), not its mean
    target probability (`target_conf`, the paper's §7.1 confidence), which is in the records."""
    name = attack_cfg.get("name", "targeted")
    if is_backdoor(name):
        return "backdoor_acc", trigger_field(name)
    return "target_acc", "target_acc"


def diverged(records: list[dict[str, Any]]) -> bool:
    """Whether a run's training loss became non-finite (logged as None and named in the
    round's `nonfinite`) or exceeded `DIVERGED_LOSS` in any of `records`."""
    return any(
        "train_loss" in (r.get("nonfinite") or ())
        or (r.get("train_loss") is not None and r["train_loss"] > DIVERGED_LOSS)
        for r in records
    )


def collect_bench(spec: BenchSpec, runs: list[RunSpec], store: Path) -> list[BenchCell]:
    """One `BenchCell` per branch run of `runs`, measured from the store's finished runs."""
    dims = coordinate_names(spec)
    records: dict[tuple[Any, ...], tuple[RunSpec, list[dict[str, Any]], Path]] = {}
    coords_of: dict[tuple[Any, ...], dict[str, Any]] = {}
    for run in runs:
        if run.role != "branch":
            continue
        path = run_dir(store, run)
        recs = read_jsonl(path / "rounds.jsonl") if is_finished(path) else []
        for c in [run.coords, *run.also]:
            key = (c["regime"], c["setting"], c["attack"], c["defense"], c["seed"])
            records[key] = (run, recs, path)
            coords_of[key] = c
    cells = []
    for key, (run, recs, path) in records.items():
        regime = spec.regimes[key[0]]
        name = _attack_name(run.config)
        kind = "clean" if key[2] == CLEAN else regime.kind
        cell = BenchCell(*key, kind=kind, coords={d: coords_of[key].get(d, "") for d in dims})
        cells.append(cell)
        if not recs:
            continue
        cell.seconds, cell.run = timing_seconds(path), path.name
        cell.wall = wall_seconds(path)
        cell.diverged = diverged(recs)
        start, end = regime.window or (1, regime.rounds)
        at = end if regime.kind == "targeted" else recs[-1]["round"]
        evaluated = [r for r in recs if r["round"] <= at and r.get("test_acc") is not None]
        if evaluated:  # the round's own, or the last evaluation before it (eval.every)
            at = evaluated[-1]["round"]
            cell.acc = evaluated[-1]["test_acc"]
        clean = records.get((key[0], key[1], CLEAN, key[3], key[4]))
        clean_recs = {r["round"]: r for r in clean[1]} if clean else {}
        if kind != "clean" and clean_recs and diverged(list(clean_recs.values())):
            cell.clean_diverged, clean_recs = True, {}
        if kind != "clean" and cell.acc is not None and at in clean_recs:
            ref = clean_recs[at].get("test_acc")
            cell.acc_drop = None if ref is None else ref - cell.acc
        if kind != "targeted":
            continue
        got, base = _success_field(run.config.get("attack", {}) or {"name": name})
        window = [r for r in recs if start <= r["round"] <= end]
        cell.success = _mean([r.get(got) for r in window])
        if clean_recs:
            cell.baseline = _mean([clean_recs.get(r["round"], {}).get(base) for r in window])
        if cell.success is not None and cell.baseline is not None:
            cell.effect = cell.success - cell.baseline
        persisted = rounds_until(recs, got, PERSIST_BELOW)
        if persisted:
            last = persisted[-1]
            cell.persists_censored = last["rounds"] is None
            cell.persists = last["observed"] if cell.persists_censored else last["rounds"]
    return cells


def wall_seconds(path: Path) -> float | None:
    """A run's wall time from start to end in one sweep (`wall.json`), or None: unknown, or the
    run was resumed, so its wall time covers only its last part."""
    if not (path / WALL).is_file():  # finished before sweeps wrote it, or by `flwbc run`
        return None
    wall = read_json(path / WALL)
    return float(wall["seconds"]) if wall.get("from_round", 0) == 0 else None


@dataclass
class Throughput:
    runs: int
    """Distinct finished runs with a known wall time."""
    runs_per_worker_hour: float
    ratio_median: float
    """Per run, wall time over its own compute (training and evaluation): the median."""
    ratio_p90: float


def throughput(cells: list[BenchCell]) -> Throughput | None:
    """How much of each run's wall time was its own training and evaluation, over the distinct
    runs whose wall time is known; None without any."""
    runs = {c.run: c for c in cells if c.run and c.wall and c.seconds}
    if not runs:
        return None
    ratios = sorted(c.wall / c.seconds for c in runs.values())  # type: ignore[operator]

    def quantile(q: float) -> float:
        return ratios[min(len(ratios) - 1, int(q * len(ratios)))]

    hours = sum(c.wall for c in runs.values()) / 3600  # type: ignore[misc]
    return Throughput(len(runs), len(runs) / hours, quantile(0.5), quantile(0.9))


def t_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float | None]:
    """Mean and half-width of the two-sided Student-t confidence interval of the mean (None
    with one value: one seed is a probe, with no interval)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    from scipy import stats

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)


def intervals_overlap(
    a: float, a_half: float | None, b: float, b_half: float | None
) -> bool | None:
    """Whether the intervals a ± a_half and b ± b_half overlap: two means whose intervals do
    are not told apart by the seeds (None where either cell is a one-seed probe)."""
    if a_half is None or b_half is None:
        return None
    return max(a - a_half, b - b_half) <= min(a + a_half, b + b_half)


MEASURE = {"untargeted": "acc", "targeted": "effect"}
"""What ranks a regime's cells: the accuracy at the budget (higher is better) or the success
over the clean baseline (lower is better)."""


@dataclass
class Summary:
    """One cell over its seeds."""

    regime: str
    setting: str
    attack: str
    defense: str
    measure: str
    mean: float
    half_width: float | None
    seeds: int
    acc: float | None
    success: float | None = None
    baseline: float | None = None
    persists: float | None = None
    pooled: bool = False
    """half_width is not the cell's own (it has one seed) but the pooled one of its regime and
    defense (`pooled_spread`)."""
    diverged: int = 0
    """Seeds whose run diverged (`BenchCell.diverged`)."""
    clean_diverged: int = 0
    """Seeds whose clean cell diverged: their targeted effect is not measured."""
    df: int | None = None
    """Degrees of freedom of half_width: seeds − 1, or the pooled spread's (None without)."""


def pooled_spread(groups: list[list[float]]) -> tuple[float, int] | None:
    """The pooled standard deviation of several groups' values and its degrees of freedom,
    sqrt(Σ (n_i − 1) s_i² / Σ (n_i − 1)), over the groups with two values or more; None
    without any."""
    df = sum(len(g) - 1 for g in groups if len(g) > 1)
    if df == 0:
        return None
    ss = sum(sum((v - sum(g) / len(g)) ** 2 for v in g) for g in groups if len(g) > 1)
    return math.sqrt(ss / df), df


def summarize(cells: list[BenchCell], confidence: float = CONFIDENCE) -> list[Summary]:
    """Each (regime, setting, attack, defense) over its finished seeds: mean and interval of
    the regime's measure (the clean cell: of its accuracy).

    A cell with one seed has no spread of its own. It gets the interval one seed would have if
    its seed-to-seed spread were the defense's pooled spread in that regime and measure
    (`pooled_spread` over the cells with several seeds, usually the confirmed worst cases):
    t(df) · s_pooled, marked `pooled`. That assumes equal spread across attacks and settings;
    without any cell of several seeds it stays None."""
    groups: dict[tuple[str, str, str, str], list[BenchCell]] = {}
    for c in cells:
        groups.setdefault((c.regime, c.setting, c.attack, c.defense), []).append(c)
    values: dict[tuple[str, str, str, str], tuple[str, list[float]]] = {}
    for key, group in groups.items():
        measure = "acc" if group[0].kind in ("clean", "untargeted") else "effect"
        got = [getattr(c, measure) for c in group if getattr(c, measure) is not None]
        if got:
            values[key] = (measure, got)
    pools: dict[tuple[str, str, str], list[list[float]]] = {}
    for (regime, _, _, defense), (measure, got) in values.items():
        pools.setdefault((regime, defense, measure), []).append(got)
    spread = {k: pooled_spread(g) for k, g in pools.items()}
    out = []
    for key, (measure, got) in values.items():
        group = groups[key]
        mean, half = t_interval(got, confidence)
        df: int | None = len(got) - 1 if half is not None else None
        pooled = spread[(key[0], key[3], measure)]
        use_pool = half is None and pooled is not None
        if use_pool:
            from scipy import stats

            sd, df = pooled  # type: ignore[misc]
            half = float(stats.t.ppf(0.5 + confidence / 2, df)) * sd
        out.append(
            Summary(
                *key,
                measure=measure,
                mean=mean,
                half_width=half,
                seeds=len(got),
                acc=_mean([c.acc for c in group]),
                success=_mean([c.success for c in group]),
                baseline=_mean([c.baseline for c in group]),
                persists=_mean([c.persists for c in group]),  # type: ignore[misc]
                pooled=use_pool,
                diverged=sum(c.diverged for c in group),
                clean_diverged=sum(c.clean_diverged for c in group),
                df=df,
            )
        )
    return out


def tie_safe(x: float) -> float:
    """x rounded to 1e-9, the precision at which the board compares means: three diverged seeds
    at 0.1 average to 0.10000000000000002, which a strict comparison would count as worse."""
    return round(x, 9)


def severity(mean: float, seeds: int, kind: str) -> tuple[float, int]:
    """How bad a cell (its mean over `seeds` seeds) is for its defense, larger being worse, to
    pick its worst attack: the mean signed by the regime's kind (`MEASURE`), rounded to 1e-9 so
    that means equal but for float rounding tie (three diverged seeds at 0.1 average to
    0.10000000000000002), and on a tie the cell with more seeds: a confirmed worst case is not
    displaced by a one-seed cell of the same value, which would send the confirmation through
    every tied attack."""
    sign = 1.0 if kind == "targeted" else -1.0
    return tie_safe(sign * mean), seeds


def worst_cases(summaries: list[Summary], regimes: dict[str, Regime]) -> list[Summary]:
    """Per (regime, setting, defense), the attack whose mean measure is worst for the defense:
    lowest accuracy (untargeted) or highest success over baseline (targeted); of tied ones, the
    one with more seeds (`severity`)."""
    best: dict[tuple[str, str, str], Summary] = {}
    for s in summaries:
        if s.attack == CLEAN:
            continue
        key = (s.regime, s.setting, s.defense)
        kind = regimes[s.regime].kind
        if key not in best or severity(s.mean, s.seeds, kind) > severity(
            best[key].mean, best[key].seeds, kind
        ):
            best[key] = s
    return list(best.values())


@dataclass
class Rank:
    regime: str
    defense: str
    score: float
    """The mean over settings of the worst case."""
    rank: int
    worst_setting: str
    worst_attack: str
    worst_value: float
    settings: int
    half_width: float | None = None
    """Of the score, at the cells' confidence: `mean_half_width` of its settings' worst cases
    (None when one of them has no interval)."""


def mean_half_width(cells: list[Summary], confidence: float = CONFIDENCE) -> float | None:
    """Half-width of the confidence interval of the mean of k independent cell means: each
    cell's standard error hᵢ / t(dfᵢ) from its own interval, combined as sqrt(Σ seᵢ²) / k, with
    Welch-Satterthwaite's degrees of freedom (Σ seᵢ²)² / Σ (seᵢ⁴ / dfᵢ). None when a cell has
    no interval."""
    if any(c.half_width is None or not c.df for c in cells):
        return None
    from scipy import stats

    q = 0.5 + confidence / 2
    se2 = [(c.half_width / float(stats.t.ppf(q, c.df))) ** 2 for c in cells]  # type: ignore[operator]
    total = sum(se2)
    if total == 0:
        return 0.0
    df = total**2 / sum(v * v / c.df for v, c in zip(se2, cells, strict=True))  # type: ignore[operator]
    return float(stats.t.ppf(q, df)) * math.sqrt(total) / len(cells)


def ranking(
    worst: list[Summary], regimes: dict[str, Regime], families: dict[str, str] | None = None
) -> list[Rank]:
    """Per regime, defenses ordered by their worst case averaged over the settings all of them
    have a worst case in (ties share the better rank), with the single worst (setting,
    attack). Of the variants of one defense's grid (`families`: variant -> defense), only the
    best-scored is ranked."""
    out = []
    for regime in regimes:
        sign = 1.0 if regimes[regime].kind == "targeted" else -1.0
        per: dict[str, list[Summary]] = {}
        for w in worst:
            if w.regime == regime:
                per.setdefault(w.defense, []).append(w)
        # score over the settings every defense has a worst case in, so that a defense whose
        # hardest setting is unfinished does not rank better for it
        shared = (
            set.intersection(*({w.setting for w in ws} for ws in per.values())) if per else set()
        )
        if shared:
            per = {d: [w for w in ws if w.setting in shared] for d, ws in per.items()}
        scored = []
        for defense, ws in per.items():
            score = sum(w.mean for w in ws) / len(ws)
            half = mean_half_width(ws)
            bad = max(ws, key=lambda w: severity(w.mean, w.seeds, regimes[regime].kind))
            scored.append((score, defense, bad, len(ws), half))
        scored.sort(key=lambda x: sign * x[0])
        if families:
            best: dict[tuple[str, str], Any] = {}
            for item in scored:  # a defense outside every grid is its own family
                family = ("grid", families[item[1]]) if item[1] in families else ("", item[1])
                best.setdefault(family, item)
            scored = list(best.values())
        for i, (score, defense, bad, n, half) in enumerate(scored):
            prev = [r for r in out if r.regime == regime]
            rank = prev[-1].rank if prev and math.isclose(prev[-1].score, score) else i + 1
            out.append(
                Rank(regime, defense, score, rank, bad.setting, bad.attack, bad.mean, n, half)
            )
    return out


def confirm_cells(
    spec: BenchSpec, summaries: list[Summary], worst: int
) -> set[tuple[str, str, str, str]]:
    """The cells that get the confirming seeds: per (regime, setting, defense) the `worst`
    attacks by their mean over the seeds finished so far (`severity`), and the clean cell
    (every baseline)."""
    chosen: set[tuple[str, str, str, str]] = set()
    groups: dict[tuple[str, str, str], list[Summary]] = {}
    for s in summaries:
        if s.attack != CLEAN:
            groups.setdefault((s.regime, s.setting, s.defense), []).append(s)
    for (regime, setting, defense), group in groups.items():
        kind = spec.regimes[regime].kind
        group.sort(key=lambda s: severity(s.mean, s.seeds, kind), reverse=True)  # stable sort
        chosen.add((regime, setting, CLEAN, defense))
        chosen.update((regime, setting, s.attack, defense) for s in group[:worst])
    return chosen


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if not rows:
        return ""
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def cells_rows(cells: list[BenchCell], cross: list[str]) -> list[dict[str, Any]]:
    rows = []
    for c in cells:
        row = asdict(c)
        coords = row.pop("coords")
        rows.append({**{d: coords.get(d, "") for d in cross}, **row})
    return rows


def read_cells(path: Path) -> list[BenchCell]:
    """`cells.csv` as written by `write_bench` (for comparing with stored results)."""
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    except FileNotFoundError:
        raise FlwbcError(f"no stored bench results: {path} not found") from None
    names = {f for f in BenchCell.__dataclass_fields__}
    needed = {"regime", "setting", "attack", "defense", "seed", "kind"}
    if rows and not needed <= set(rows[0]):
        missing = ", ".join(sorted(needed - set(rows[0])))
        raise FlwbcError(f"{path} is not a bench's cells.csv (no column {missing})")
    out = []
    for r in rows:
        coords = {k: v for k, v in r.items() if k not in names}
        kw: dict[str, Any] = {}
        for k, v in r.items():
            if k not in names or k == "coords":
                continue
            if k == "seed":
                kw[k] = int(v)
            elif k in ("persists",):
                kw[k] = int(v) if v else None
            elif k in ("persists_censored", "diverged", "clean_diverged"):
                kw[k] = v == "True"
            elif k == "run":
                kw[k] = v or None
            elif k in ("regime", "setting", "attack", "defense", "kind"):
                kw[k] = v
            else:
                kw[k] = float(v) if v else None
        out.append(BenchCell(**kw, coords=coords))
    return out


def check_stored(spec: BenchSpec, stored: list[BenchCell], path: Path) -> None:
    """Raise unless every stored cell is one `spec` defines (regime, setting, attack): a board
    computed from another spec would place a defense against other settings' runs."""
    settings = spec.all_settings()
    attacks = {name: regime_attacks(r) for name, r in spec.regimes.items()}
    for c in stored:
        regime = spec.regimes.get(c.regime)
        if not (
            regime is not None
            and c.setting in settings
            and (regime.settings is None or c.setting in regime.settings)
            and c.attack in attacks[c.regime]
        ):
            raise FlwbcError(
                f"{path} holds a cell bench {spec.id} does not define (regime {c.regime}, "
                f"setting {c.setting}, attack {c.attack}); compare with a board of the same spec"
            )


def _sweep(runs: list[RunSpec], store: Path, desc: str, **kw: Any) -> Any:
    from flwbc.experiments.sweep import run_sweep

    return run_sweep(runs, store, desc=desc, **kw)


def bench_runs(
    spec: BenchSpec,
    store: Path,
    *,
    quick: bool = False,
    defenses: list[str] | None = None,
    data_dir: str | None = None,
    run: bool = True,
    sweep_options: dict[str, Any] | None = None,
    on_progress: Callable[[list[RunSpec]], None] | None = None,
) -> tuple[list[RunSpec], list[Any]]:
    """Screen every cell with the spec's seeds, then (unless quick without `quick.confirm`)
    run the confirming seeds on each defense's worst attacks; the runs and the sweeps' reports.

    The screening seeds choose the first cells to confirm. When the confirmed means move
    another attack to the worst (`worst`) of a defense, that cell is confirmed too, until the
    worst cases all have the confirming seeds; so the choice depends on the runs of the spec's
    seeds alone, not on what else the store holds. `on_progress(runs)` is called now and then
    while runs finish (`run_sweep`), with every run of the bench so far."""
    opts = dict(sweep_options or {})
    runs = expand_bench(spec, quick=quick, defenses=defenses, data_dir=data_dir)
    if on_progress is not None:
        opts["on_progress"] = lambda: on_progress(runs)
    reports = [_sweep(runs, store, f"bench {spec.id}", **opts)] if run else []
    if spec.confirm is None or (quick and not spec.quick.confirm):
        return runs, reports
    confirmed: set[tuple[str, str, str, str]] = set()
    by_key = {r.key: r for r in runs}
    while True:
        summaries = summarize(collect_bench(spec, runs, store))
        chosen = confirm_cells(spec, summaries, spec.confirm.worst) - confirmed
        if not chosen:
            return runs, reports
        confirmed |= chosen
        more = expand_bench(
            spec,
            quick=quick,
            seeds=spec.confirm.seeds,
            defenses=defenses,
            cells=chosen,
            data_dir=data_dir,
        )
        branches = []
        for r in (r for r in more if r.role == "branch"):
            known = by_key.get(r.key)
            if known is None:
                branches.append(r)
                continue
            for c in [r.coords, *r.also]:  # a run the bench has stands for this cell too
                if c != known.coords and c not in known.also:
                    known.also.append(c)
        parents = {r.parent for r in branches if r.parent is not None}
        warmups = [r for r in more if r.key in parents]
        for r in [*warmups, *branches]:  # `runs` is the list on_progress is given
            if r.key not in by_key:
                by_key[r.key] = r
                runs.append(r)
        if run and branches:
            todo = [by_key[k] for k in sorted(parents)] + branches
            reports.append(_sweep(todo, store, f"bench {spec.id} (confirming seeds)", **opts))

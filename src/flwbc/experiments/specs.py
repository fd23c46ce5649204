"""Experiment specs: one readable YAML file per result of the paper, expanded into runs.

A spec names the settings it covers (from `settings.yaml`: dataset, partition, warm-up length),
the seeds, a config `base`, the `branch` (rounds and attack schedule after the warm-up) and its
`axes`: named points, each a partial config. The grid is settings × the product of the axes ×
seeds. Every grid point becomes a *branch* run that starts from the *warm-up* run of its setting
and seed: the model trained once, without attacks, to the attack round. So every defense of a
spec sees the same warm model, the same clients, data order and attack schedule (a paired
comparison).

Runs are identified by a hash of their config (`run_key`), so a warm-up or branch that two specs
share is trained once, and a finished run is never redone.

In a point's config a string `$name` is replaced by the setting's variable `name` (e.g. the DP
clip norm, 5 on Fashion-MNIST and 10 on CIFAR-10).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flwbc.attacks import ATTACKS
from flwbc.config import defense_names, make_config, unknown_field_message
from flwbc.defenses import CLIENT_DEFENSES
from flwbc.errors import FlwbcError, parse_error_text
from flwbc.legacy import key_view

SPEC_DIR = resources.files("flwbc.experiments") / "specs"
RESULTS = ("fig2", "fig3", "fig4", "fig5", "table1", "fig6")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Setting(_Strict):
    title: str
    warmup_rounds: int = Field(ge=1)
    vars: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)


class QuickGlobal(_Strict):
    warmup_rounds: int = Field(3, ge=1)
    config: dict[str, Any] = Field(default_factory=dict)


class Settings(_Strict):
    common: dict[str, Any] = Field(default_factory=dict)
    warmup_config: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, Setting]
    quick: QuickGlobal = Field(default_factory=QuickGlobal)


class Branch(_Strict):
    rounds: int = Field(ge=1)
    config: dict[str, Any] = Field(default_factory=dict)


class Check(_Strict):
    """How a claim is judged (see `flwbc.experiments.results`)."""

    kind: Literal[
        "mitigation_at_most",
        "mitigation_more_than",
        "cost_at_most",
        "frontier",
        "frontier_none",
        "paper_table",
    ]
    value: float | None = None
    cost: float | None = None
    tolerance: float = 2.0


class Claim(_Strict):
    text: str
    where: dict[str, str | list[str]] = Field(default_factory=dict)
    check: Check


class Plot(_Strict):
    kind: Literal["curves", "tradeoff", "none"] = "curves"
    series: str | None = None
    panels: str = "setting"


class Table(_Strict):
    rows: str


class Quick(_Strict):
    settings: list[str] | None = None
    seeds: list[int] = Field(default_factory=lambda: [0])
    branch_rounds: int = Field(4, ge=1)
    attack_rounds: list[int] = Field(default_factory=lambda: [1])
    points: dict[str, list[str]] = Field(default_factory=dict)


class Spec(_Strict):
    id: str
    title: str
    description: str = ""
    settings: list[str] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    base: dict[str, Any] = Field(default_factory=dict)
    branch: Branch
    axes: dict[str, dict[str, dict[str, Any]]] = Field(min_length=1)
    plot: Plot = Field(default_factory=Plot)
    table: Table | None = None
    paper_values: dict[str, dict[str, str]] = Field(default_factory=dict)
    claims: list[Claim] = Field(default_factory=list)
    quick: Quick = Field(default_factory=Quick)

    @model_validator(mode="after")
    def _consistent(self) -> Spec:
        names = ["setting", "series", *self.axes]
        for ax, points in self.axes.items():
            if ax in ("setting", "series", "seed"):
                raise ValueError(f"axis name '{ax}' is reserved")
            if not points:
                raise ValueError(f"axis '{ax}' has no points")
        for ax in (self.plot.series, self.plot.panels, self.table.rows if self.table else None):
            if ax is not None and ax not in names:
                raise ValueError(f"'{ax}' is not an axis of this spec")
        for claim in self.claims:
            for ax in claim.where:
                if ax not in names:
                    raise ValueError(f"claim '{claim.text}': unknown axis '{ax}'")
        for ax, pts in self.quick.points.items():
            unknown = [p for p in pts if p not in self.axes.get(ax, {})]
            if ax not in self.axes or unknown:
                raise ValueError(f"quick.points: unknown axis '{ax}' or points {unknown}")
        return self


@dataclass
class RunSpec:
    """One run of a sweep: its config, its identity, and the run it starts from."""

    key: str
    label: str
    config: dict[str, Any]
    rounds: int
    parent: str | None = None
    role: Literal["warmup", "branch"] = "branch"
    coords: dict[str, Any] = field(default_factory=dict)
    also: list[dict[str, Any]] = field(default_factory=list)
    """Further cells this same run stands for (a bench whose cells share a config)."""
    aliases: tuple[str, ...] = ()
    """Keys the same run had under earlier versions of `run_key` (a store written then is
    still found)."""

    def dir_name(self) -> str:
        return f"{self.label}--{self.key}"


def run_label(config: dict[str, Any], role: str) -> str:
    """A readable directory label derived from the config alone, so a run that several specs
    share gets the same directory whichever spec asks for it (the key makes it unique): a
    branch's names its attack, client defense, rule and options. A store written when labels
    did not name the attack is still found by key (`store.run_dir`)."""
    c = make_config(config)
    head = [c.data.name, c.data.partition, f"E{c.local.epochs}B{c.local.batch_size}"]
    if role == "warmup":
        return "-".join(["warmup", *head, f"n{c.attack.num_images}", f"s{c.seed}"])
    defense = (
        "+".join(
            n + _labelled_options(n, c.defense.options.get(n, {}))
            for n in defense_names(c.defense.client)
        )
        or "none"
    )
    agg = c.server.aggregator + "".join(f"-{v}" for v in c.server.options.values())
    attack = [c.attack.name] if c.attack.enabled else []
    sizes = f"m{c.attack.num_malicious}n{c.attack.num_images}"
    parts = [*head, *attack, defense, agg, sizes, f"s{c.seed}"]
    return _safe_label("-".join(parts))


def _labelled_options(name: str, given: dict[str, Any]) -> str:
    """The values of a client defense's options that its `Options` marks for run labels
    (`json_schema_extra={"label": True}`, e.g. FL-WBC's s), each formatted with `:g`."""
    model = CLIENT_DEFENSES.options(name, given)
    if model is None:
        return ""
    marked = [
        f
        for f, info in type(model).model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("label")
    ]
    return "".join(f"{getattr(model, f):g}" for f in marked)


def deep_merge(*trees: dict[str, Any]) -> dict[str, Any]:
    """Merge nested dicts left to right; later values win, lists are replaced."""
    out: dict[str, Any] = {}
    for tree in trees:
        for k, v in tree.items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = deep_merge(out[k], v)
            else:
                out[k] = copy.deepcopy(v)
    return out


def substitute(tree: Any, variables: dict[str, Any], where: str) -> Any:
    """Replace every string `$name` in `tree` by `variables[name]`."""
    if isinstance(tree, dict):
        return {k: substitute(v, variables, where) for k, v in tree.items()}
    if isinstance(tree, list):
        return [substitute(v, variables, where) for v in tree]
    if isinstance(tree, str) and tree.startswith("$"):
        if tree[1:] not in variables:
            raise FlwbcError(
                f"{where}: unknown variable '{tree}' (the setting defines "
                f"{', '.join(sorted(variables)) or 'none'})"
            )
        return variables[tree[1:]]
    return tree


IDENTITY_EXCLUDED = ("output", "threads")


def run_key(config: dict[str, Any], parent: str | None, *, legacy: bool = False) -> str:
    """A run's identity: a hash of its validated config and of the run it starts from.

    Only values that differ from the schema's defaults count, so a field added to the schema
    later (with a default that keeps old behaviour) leaves existing runs' keys unchanged; the
    output location, data location and thread count do not change results and do not count.
    `legacy`: the key as flwbc computed it before the data location was fully left out (an
    empty `data` section stayed behind, so a run had another key with `--data-dir` than
    without); `expand` gives runs those keys as aliases, so stores written then stay usable.
    """
    cfg = key_view(
        config, make_config(config).model_dump(mode="json", exclude_defaults=True), _non_default
    )
    for k in IDENTITY_EXCLUDED:
        cfg.pop(k, None)
    cfg.get("data", {}).pop("dir", None)
    if not legacy and cfg.get("data") == {}:
        cfg.pop("data")
    cfg.pop("init_model", None)
    blob = json.dumps({"config": cfg, "parent": parent}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _non_default(kind: str, name: str, given: dict[str, Any]) -> dict[str, Any]:
    """A plug-in's options that differ from their defaults, validated, as JSON."""
    model = (ATTACKS if kind == "attack" else CLIENT_DEFENSES).options(name, given)
    return {} if model is None else model.model_dump(mode="json", exclude_defaults=True)


def _with_data_dir(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with some data location: the legacy keys of runs stored with `--data-dir`
    (whose value never counted) whether or not one is given now."""
    return deep_merge(config, {"data": {"dir": config.get("data", {}).get("dir") or "."}})


def _read_yaml(path: Path | Any, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FlwbcError(f"{what} not found: {path}") from None
    except yaml.YAMLError as err:
        raise FlwbcError(f"cannot parse {what} {path}: {parse_error_text(err)}") from None
    if not isinstance(data, dict):
        raise FlwbcError(f"{what} {path} must hold a mapping")
    return data


def _validate(model: type[BaseModel], data: dict[str, Any], where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        if first["type"] == "extra_forbidden":
            unknown = unknown_field_message(tuple(first["loc"]), model)
            raise FlwbcError(f"invalid {where}: {unknown}") from None
        loc = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        raise FlwbcError(f"invalid {where}: {loc + ': ' if loc else ''}{msg}") from None


def load_settings(path: Path | None = None) -> Settings:
    path = path or SPEC_DIR / "settings.yaml"
    return _validate(Settings, _read_yaml(path, "settings file"), f"settings file {path}")


def spec_path(name: str) -> Path | Any:
    """A bundled result's spec (`fig3`) or a path to a user's spec file."""
    if name in RESULTS:
        return SPEC_DIR / f"{name}.yaml"
    p = Path(name)
    if p.suffix in (".yaml", ".yml"):
        return p
    raise FlwbcError(
        f"unknown result '{name}'; choose one of {', '.join(RESULTS)}, all, "
        "or give a spec file (.yaml)"
    )


def load_spec(name: str, settings: Settings | None = None) -> Spec:
    """Load and validate a spec, checking its settings exist."""
    path = spec_path(name)
    spec = _validate(Spec, _read_yaml(path, "spec"), f"spec {path}")
    settings = settings or load_settings()
    for s in [*spec.settings, *(spec.quick.settings or [])]:
        if s not in settings.settings:
            raise FlwbcError(
                f"spec {spec.id}: unknown setting '{s}'; settings.yaml defines "
                f"{', '.join(settings.settings)} (a bench spec defines its own settings: "
                "docs/bench.md)"
            )
    return spec


def expand(
    spec: Spec,
    settings: Settings,
    *,
    quick: bool = False,
    seeds: list[int] | None = None,
    data_dir: str | None = None,
) -> list[RunSpec]:
    """The spec's runs: each (setting, seed)'s warm-up, then one branch per grid point and seed.

    Every config is validated here, plug-in options included, so a bad spec fails before
    anything runs or any run directory is made.
    """
    from flwbc.experiment import check_plugin_options

    setting_names = (spec.quick.settings or spec.settings) if quick else spec.settings
    seed_list = seeds or (spec.quick.seeds if quick else spec.seeds)
    axes = {
        ax: {
            p: c
            for p, c in pts.items()
            if not quick or ax not in spec.quick.points or p in spec.quick.points[ax]
        }
        for ax, pts in spec.axes.items()
    }
    branch_rounds = spec.quick.branch_rounds if quick else spec.branch.rounds
    extra: dict[str, Any] = {"data": {"dir": data_dir}} if data_dir else {}
    runs: dict[str, RunSpec] = {}
    for sname in setting_names:
        setting = settings.settings[sname]
        warm_rounds = settings.quick.warmup_rounds if quick else setting.warmup_rounds
        base = deep_merge(
            settings.common,
            setting.config,
            spec.base,
            settings.quick.config if quick else {},
        )
        base = deep_merge(substitute(base, setting.vars, f"spec {spec.id}"), extra)
        warm_extra = substitute(settings.warmup_config, setting.vars, "settings warmup_config")
        for seed in seed_list:
            warm_cfg = deep_merge(
                base,
                warm_extra,
                {
                    "seed": seed,
                    "federation": {"rounds": warm_rounds},
                    "attack": {"prob": 0.0, "rounds": None},
                },
            )
            wkey = run_key(warm_cfg, None)
            wold = run_key(_with_data_dir(warm_cfg), None, legacy=True)
            runs.setdefault(
                wkey,
                RunSpec(
                    wkey,
                    run_label(warm_cfg, "warmup"),
                    warm_cfg,
                    warm_rounds,
                    role="warmup",
                    coords={"setting": sname, "seed": seed},
                    aliases=(wold,) if wold != wkey else (),
                ),
            )
            for combo in itertools.product(*[list(pts.items()) for pts in axes.values()]):
                point_cfgs = [substitute(c, setting.vars, f"spec {spec.id}") for _, c in combo]
                branch_cfg = deep_merge(
                    base,
                    spec.branch.config,
                    {"attack": {"rounds": spec.quick.attack_rounds}} if quick else {},
                    *point_cfgs,
                    {"seed": seed, "federation": {"rounds": branch_rounds}},
                )
                check_plugin_options(make_config(branch_cfg))
                key = run_key(branch_cfg, wkey)
                old = run_key(_with_data_dir(branch_cfg), wold, legacy=True)
                names = [p for p, _ in combo]
                coords = {"setting": sname, "seed": seed, **dict(zip(axes, names, strict=True))}
                runs.setdefault(
                    key,
                    RunSpec(
                        key,
                        run_label(branch_cfg, "branch"),
                        branch_cfg,
                        branch_rounds,
                        parent=wkey,
                        coords=coords,
                        aliases=(old,) if old != key else (),
                    ),
                )
    return list(runs.values())


def _safe_label(label: str) -> str:
    out = []
    for ch in label.replace("σ", "sigma").replace("β", "beta"):
        out.append(ch if ch.isascii() and (ch.isalnum() or ch in "-_.=") else "_")
    return "".join(out)


def series_of(point: str) -> str:
    """A tradeoff point's series: its name up to the first space ("FL-WBC s=0.4" → "FL-WBC")."""
    return point.split(" ", 1)[0]

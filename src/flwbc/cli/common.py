"""What several `flwbc` subcommands share: one flag per config field (generated from the
config schema: `--local-epochs` sets `local.epochs`, ..., with a few short aliases), one per
option of each registered client defense (`--wbc-s` sets `defense.options.wbc.s`) and of the
default attack (`--attack-epochs`, the paper's eq. 3 attack's), and
`--set a.b=value` for any field; and the flags, places and exit status of the commands that
run sweeps (`reproduce`, `matrix`, `bench`)."""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from flwbc.attacks import ATTACKS
from flwbc.config import ExperimentConfig, load_config_file, make_config, set_dotted
from flwbc.defenses import CLIENT_DEFENSES
from flwbc.errors import FlwbcError
from flwbc.experiments import BACKENDS
from flwbc.legacy import MOVED_ATTACK_FIELDS, MOVED_DATA_FIELDS, TARGETED
from flwbc.plugins import registered
from flwbc.textvalues import parse_mapping, parse_scalar

if typing.TYPE_CHECKING:
    from flwbc.experiments.sweep import SweepReport

RAY_FLAGS = ("address", "cpus_per_run", "gpus_per_run", "max_retries")

ALIASES = {
    "dataset": "data.name",
    "data-dir": "data.dir",
    "rounds": "federation.rounds",
    "client-defense": "defense.client",
    "aggregator": "server.aggregator",
    "out": "output.dir",
    "name": "output.name",
}


def _config_fields() -> list[tuple[str, Any, str, str]]:
    """(dotted path, annotation, help, flag) of every config field and of every option of each
    registered client defense (`--<defense>-<option>`, e.g. `--wbc-s`), which is not named
    like a config field."""
    out = [(d, a, h, _flag_for(d)) for d, a, h in _fields(ExperimentConfig)]
    taken = {flag for *_, flag in out}
    # the default attack's options keep the flags they had as the attack section's fields,
    # `--attack-epochs` ...; they set `attack.<option>`, which `flwbc.legacy` moves into the
    # targeted attack's options (and drops for another attack, which never read them)
    default_attack = ATTACKS.lookup(TARGETED)
    if getattr(default_attack, "Options", None) is not None:
        for dotted, ann, help_text in _fields(default_attack.Options, "attack."):
            if _flag_for(dotted) not in taken:
                taken.add(_flag_for(dotted))
                out.append((dotted, ann, help_text, _flag_for(dotted)))
    # the built-in partitions' options keep the flags they had as the data section's fields,
    # `--data-dirichlet-alpha` ...; `flwbc.legacy` moves them into data.partition_options
    for field, (partition, option, kind, _) in MOVED_DATA_FIELDS.items():
        dotted = f"data.{field}"
        if _flag_for(dotted) not in taken:
            taken.add(_flag_for(dotted))
            place = f"data.partition_options.{option}"
            out.append((dotted, kind, f"{partition}'s {option} [{place}]", _flag_for(dotted)))
    for name, cls in CLIENT_DEFENSES.items():
        if getattr(cls, "Options", None) is None:
            continue
        for dotted, ann, help_text in _fields(cls.Options, f"defense.options.{name}."):
            flag = f"{name}-{dotted.rpartition('.')[2]}".replace("_", "-")
            if flag not in taken:
                taken.add(flag)
                out.append((dotted, ann, help_text, flag))
    return out


def _fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted path, annotation, help with the default) for every leaf field of the schema."""
    out = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(_fields(ann, dotted + "."))
        else:
            default = field.get_default(call_default_factory=True)
            choices = _choices(dotted, ann)
            parts = [
                field.description or "",
                "one of " + ", ".join(map(str, choices)) if choices else "",
                _list_hint(ann),
                "KEY=VALUE,... or a JSON mapping, e.g. beta=0.2" if _is_dict(ann) else "",
            ]
            text = "; ".join(p for p in parts if p)
            out.append((dotted, ann, f"{text} [{dotted}, default {default!r}]".strip()))
    return out


def _flag_for(dotted: str) -> str:
    return dotted.replace(".", "-").replace("_", "-")


def _is_textual(ann: Any) -> bool:
    return ann is str or (typing.get_origin(ann) is not dict and str in typing.get_args(ann))


def _is_list(ann: Any) -> bool:
    return any(typing.get_origin(a) is list for a in (ann, *typing.get_args(ann)))


def _list_hint(ann: Any) -> str:
    if not _is_list(ann):
        return ""
    items = [
        typing.get_args(a) for a in (ann, *typing.get_args(ann)) if typing.get_origin(a) is list
    ]
    return "comma-separated, e.g. 1,16" if items and items[0] == (int,) else "comma-separated"


def _is_dict(ann: Any) -> bool:
    return any(typing.get_origin(a) is dict for a in (ann, *typing.get_args(ann)))


def _parse_value(raw: str, ann: Any) -> Any:
    if raw.lower() in ("none", "null") and type(None) in typing.get_args(ann):
        return None
    if _is_dict(ann):
        return parse_mapping(raw)
    if _is_list(ann):
        items = raw.strip().removeprefix("[").removesuffix("]").split(",")
        return [parse_scalar(v) for v in items if v.strip()]
    if _is_textual(ann):
        return raw
    return parse_scalar(raw)


def _choices(dotted: str, ann: Any) -> tuple[Any, ...]:
    """The allowed values of a field: a Literal's, or the registered aggregators."""
    if typing.get_origin(ann) is typing.Literal:
        return typing.get_args(ann)
    kinds = {"server.aggregator": "aggregator", "engine": "engine"}
    if dotted in kinds:
        return tuple(sorted(registered(kinds[dotted])))
    return ()


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """--config, --set and one flag per config field (the config of `run` and its kin)."""
    parser.add_argument("--config", help="YAML or JSON config file; flags override it")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config field, e.g. --set server.options.beta=0.2",
    )
    group = parser.add_argument_group(
        "config fields (docs/configuration.md explains each; a config file sets them too)"
    )
    aliases_by_path = {v: k for k, v in ALIASES.items()}
    for dotted, _ann, help_text, flag in _config_fields():
        names = [f"--{flag}"]
        alias = aliases_by_path.get(dotted)
        if alias is not None and f"--{alias}" not in names:
            names.insert(0, f"--{alias}")
        group.add_argument(*names, dest=f"cfg:{dotted}", default=None, metavar="V", help=help_text)


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    data = load_config_file(args.config) if args.config else {}
    data.pop("_meta", None)
    types_by_path = {d: a for d, a, _, _ in _config_fields()}
    given: list[tuple[str, Any]] = []
    for key, raw in vars(args).items():
        if key.startswith("cfg:") and raw is not None:
            dotted = key[4:]
            given.append((dotted, _parse_value(raw, types_by_path[dotted])))
    for item in args.set:
        if "=" not in item:
            raise FlwbcError(f"--set expects KEY=VALUE, got '{item}'")
        dotted, raw = item.split("=", 1)
        dotted = dotted.strip()
        given.append((dotted, _parse_value(raw, types_by_path.get(dotted, Any))))
    for dotted, value in given:
        set_dotted(data, dotted, value)
    attack = data.get("attack")
    if isinstance(attack, dict) and attack.get("name", TARGETED) == TARGETED:
        # a flag overrides the config file: `--attack-epochs 3` sets the targeted attack's
        # option even where the file gives it in attack.options
        for dotted, _ in given:
            field = dotted.removeprefix("attack.")
            if field in MOVED_ATTACK_FIELDS and field in attack:
                set_dotted(data, f"attack.options.{field}", attack.pop(field))
    section = data.get("data")
    if isinstance(section, dict):
        # likewise `--data-dirichlet-alpha 0.1` overrides the file's partition_options.alpha
        for dotted, _ in given:
            field = dotted.removeprefix("data.")
            moved = MOVED_DATA_FIELDS.get(field)
            if moved and field in section and section.get("partition", "iid") == moved[0]:
                set_dotted(data, f"data.partition_options.{moved[1]}", section.pop(field))
    return make_config(data)


def add_data_dir_arg(parser: argparse.ArgumentParser) -> None:
    """--data-dir of the commands that run sweeps."""
    parser.add_argument(
        "--data-dir",
        default=None,
        help="dataset root for every run (default: $FLWBC_DATA_DIR, then the cache, then a "
        "download); not part of a run's identity",
    )


def add_backend_args(parser: argparse.ArgumentParser) -> None:
    """Where a sweep command's runs run: this machine's worker processes or a Ray cluster."""
    group = parser.add_argument_group("where the runs run (docs/cluster.md)")
    group.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="local: worker processes on this machine (default); ray: one Ray task per run on "
        "a Ray cluster, results written into --runs here",
    )
    group.add_argument(
        "--address",
        default=None,
        metavar="HOST:PORT",
        help="the Ray cluster's head (or 'auto'); default: a Ray instance on this machine for "
        "the sweep alone",
    )
    group.add_argument(
        "--cpus-per-run",
        type=float,
        default=None,
        metavar="N",
        help="CPUs Ray reserves for each run, fractions allowed (default 1); its torch threads "
        "unless --threads",
    )
    group.add_argument(
        "--gpus-per-run",
        type=float,
        default=None,
        metavar="N",
        help="GPUs Ray reserves for each run (default 0); 0.25 packs four runs on a GPU",
    )
    group.add_argument(
        "--max-retries",
        type=int,
        default=None,
        metavar="N",
        help="times a run lost to a dead Ray node or worker is restarted from its last saved "
        "round before it counts as failed (default 3)",
    )
    group.add_argument(
        "--device",
        default=None,
        help="torch device of every run, e.g. cuda (default: the spec's, cpu); not part of a "
        "run's identity",
    )


def sweep_status(sweep: SweepReport | None) -> int:
    """Print a sweep's outcome; the exit status: 1 when any run failed."""
    if sweep is None:
        return 0
    print(
        f"{len(sweep.finished)} runs finished, {len(sweep.failed)} failed in {sweep.seconds:.0f} s",
        file=sys.stderr,
    )
    for key, why in sweep.failed.items():
        print(f"  failed {key}: {why}", file=sys.stderr)
    return 1 if sweep.failed else 0


def sweep_places(
    args: argparse.Namespace, argv: list[str] | None, name: str
) -> tuple[Path, Path, str]:
    """A sweep command's run store (default `runs/NAME`, `runs/NAME-quick` with --quick), its
    output folder (default `STORE/results`) and the command line as typed."""
    default = Path(f"runs/{name}-quick" if args.quick else f"runs/{name}")
    store = Path(args.runs) if args.runs else default
    out = Path(args.out) if args.out else store / "results"
    return store, out, " ".join(["flwbc", *(argv if argv is not None else sys.argv[1:])])


def check_workers(args: argparse.Namespace) -> None:
    for name in ("jobs", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise FlwbcError(f"--{name} must be at least 1, got {value}")


def sweep_backend(args: argparse.Namespace) -> dict[str, Any]:
    """`run_sweep`'s backend, device and Ray options from a sweep command's flags."""
    given = [f"--{n.replace('_', '-')}" for n in RAY_FLAGS if getattr(args, n) is not None]
    if args.backend != "ray":
        if given:
            raise FlwbcError(f"{', '.join(given)}: only with --backend ray")
        return {"backend": args.backend, "device": args.device}
    from flwbc.experiments.ray_backend import RayOptions, require_ray

    if not args.no_run:
        require_ray()
    chosen = {n: getattr(args, n) for n in RAY_FLAGS if getattr(args, n) is not None}
    return {"backend": "ray", "device": args.device, "ray_options": RayOptions(**chosen)}

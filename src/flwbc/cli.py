"""The `flwbc` command line.

`flwbc run` takes a config file and/or flags; the flags are generated from the config schema
(`--local-epochs` sets `local.epochs`, `--wbc-s` sets `defense.wbc.s`, ...) with a few short
aliases, and `--set a.b=value` reaches any field. User mistakes print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from flwbc._version import __version__
from flwbc.config import ExperimentConfig, load_config_file, make_config, set_dotted
from flwbc.errors import FlwbcError
from flwbc.experiments import BACKENDS
from flwbc.runtime import Terminated, stop_on_sigterm
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
SECTION_PREFIX = {"defense.wbc": "wbc", "defense.ldp": "ldp"}


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
    section, _, leaf = dotted.rpartition(".")
    head = SECTION_PREFIX.get(section, section.replace(".", "-"))
    return (f"{head}-{leaf}" if head else leaf).replace("_", "-")


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
    if dotted == "server.aggregator":
        from flwbc.server import AGGREGATORS

        return tuple(sorted(AGGREGATORS))
    if dotted == "engine":
        from flwbc.engine import ENGINES

        return tuple(sorted(ENGINES))
    return ()


def _add_config_args(parser: argparse.ArgumentParser) -> None:
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
    for dotted, _ann, help_text in _fields(ExperimentConfig):
        names = [f"--{_flag_for(dotted)}"]
        alias = aliases_by_path.get(dotted)
        if alias is not None and f"--{alias}" not in names:
            names.insert(0, f"--{alias}")
        group.add_argument(*names, dest=f"cfg:{dotted}", default=None, metavar="V", help=help_text)


def build_parser() -> argparse.ArgumentParser:
    from flwbc.catalog import KINDS
    from flwbc.experiments.matrix import DEFAULT_MATRIX, bundled_help

    parser = argparse.ArgumentParser(
        prog="flwbc",
        description="Federated learning under targeted model poisoning, with FL-WBC.",
    )
    parser.add_argument("--version", action="version", version=f"flwbc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run one experiment",
        description="Run one federated experiment and write its run directory. `flwbc list` "
        "shows every plug-in to choose from (attacks, schedules, client defenses, pre-aggregation "
        "steps, aggregators, metrics, datasets, partitions, engines, models), with its options; "
        "the choices listed below are the built-in ones and those of entry points.",
    )
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_args(run)

    flower = sub.add_parser(
        "flower",
        help="Flower deployment helpers (needs the [flower] extra)",
        description="Prepare a real Flower deployment of an experiment "
        "(docs/flower-deployment.md).",
    )
    fsub = flower.add_subparsers(dest="flower_command", required=True)
    parts = fsub.add_parser(
        "partitions",
        help="write one data file per client, for the SuperNodes",
        description="Write DIR/client-<c>.safetensors for every client of the experiment; "
        "start SuperNode c with --node-config "
        "'partition-id=c partition-file=DIR/client-<c>.safetensors'.",
    )
    parts.add_argument("dir", metavar="DIR", help="folder for the partition files")
    _add_config_args(parts)
    fapp = fsub.add_parser(
        "app",
        help="write a Flower app directory for 'flwr run'",
        description="Write DIR/pyproject.toml: a Flower app whose ServerApp and ClientApp are "
        "flwbc's (installed in the environment, so the app holds no code).",
    )
    fapp.add_argument("dir", metavar="DIR", help="folder for the app's pyproject.toml")

    kinds = ", ".join(KINDS)
    lst = sub.add_parser(
        "list",
        help=f"list the registered plug-ins of every kind ({kinds})",
        description="Every registered plug-in of each kind, built in or loaded (entry points of "
        "the group flwbc.plugins, and --plugins modules), with its description and options: "
        "name, type, default (or 'required'), bounds and meaning.",
    )
    lst.add_argument(
        "kind", nargs="?", default=None, metavar="KIND", help=f"one kind only: {kinds}"
    )
    lst.add_argument(
        "--plugins", default="", metavar="MODULE,...", help="import these plug-in modules first"
    )

    summ = sub.add_parser("summary", help="print the summary of a run directory")
    summ.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")

    comp = sub.add_parser("compare", help="per-round confidence and accuracy of runs side by side")
    comp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")

    fetch = sub.add_parser("fetch", help="download a dataset into the cache (MD5-checked)")
    fetch.add_argument("dataset", help="fmnist, mnist or cifar10")
    fetch.add_argument(
        "--data-dir",
        default=None,
        help="look for the dataset here first (default: $FLWBC_DATA_DIR); a download goes to "
        "the cache ($FLWBC_CACHE_DIR, else ~/.cache/flwbc)",
    )

    ana = sub.add_parser(
        "analyze",
        help="measure the attack effect on parameters (AEP) of runs",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Replay each run with its counterfactual (attackers behaving benignly) and "
        "write analysis.jsonl, analysis.json and analysis.png|svg into the run directory: the AEP "
        "norm per round, eq. 7's estimate and its error, and the Hessian evidence. Cost: the "
        "replay costs about what the run did; eq. 7's estimator and the Hessian checks add "
        "2-5 min a round on 2 cores (Fashion-MNIST, E=10, B=10); --estimator-rounds 0 "
        "--hessian-clients 0 leaves only the replay.",
    )
    ana.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories to analyse")
    ana.add_argument("--rounds", type=int, default=None, help="only the first N rounds")
    ana.add_argument(
        "--estimator-rounds",
        type=int,
        default=10,
        help="rounds after the first attack to propagate eq. 7 (0: off)",
    )
    ana.add_argument(
        "--hessian-clients",
        type=int,
        default=2,
        help="benign clients per round whose Hessian is examined (0: off)",
    )
    ana.add_argument(
        "--hutchinson-samples",
        type=int,
        default=32,
        help="random probes for Hutchinson's estimate of the Hessian's diagonal",
    )
    ana.add_argument(
        "--plot",
        default=None,
        metavar="PREFIX",
        help="also draw all runs in one figure, PREFIX.png and PREFIX.svg",
    )
    ana.add_argument("--no-progress", action="store_true", help="no progress bar")

    rules = sub.add_parser(
        "compare-rules",
        help="what other aggregation rules would have made of a run's own client updates",
        description="Replay the run along its own trajectory; in every round apply each RULE to "
        "the same client updates and score the model it would make (D_M confidence and "
        "accuracy, test accuracy). Writes rules.jsonl, rules.md and rules.png|svg into the run "
        "directory and prints the table.",
    )
    rules.add_argument("run_dir", metavar="RUN_DIR", help="the run whose updates are replayed")
    rules.add_argument(
        "--rule",
        action="append",
        required=True,
        metavar="RULE",
        help="an aggregator, NAME or NAME:KEY=VALUE,... (e.g. fedavg, trimmed_mean:beta=0.1); "
        "repeat for several",
    )
    rules.add_argument("--rounds", type=int, default=None, help="only the first N rounds")
    rules.add_argument("--no-test", action="store_true", help="skip the test-set accuracy")
    rules.add_argument("--no-progress", action="store_true", help="no progress bar")

    rep = sub.add_parser(
        "reproduce",
        help="reproduce the paper's figures and tables, with a REPORT.md",
        description="Run the paper's results from their specs (resumable: rerun the same "
        "command to continue), then write figures, tables and REPORT.md into --out. Runs go "
        "to the run store (--runs), outputs beside it (RUNS/results); a REPORT.md that covers "
        "more finished runs is never replaced without --overwrite. Time on 2 cores: --quick a "
        "few minutes; fig2 about 41 min of compute, fig3 8 h, fig4 9.5 h, fig5 10 h, table1 4 h, "
        "fig6 5 h; all: 29 h of compute, 15 h of wall clock with two workers. Exit status: 0 "
        "when every run finished, 1 when any failed (each printed with its error and log), 2 "
        "on bad input, 130 when interrupted (Ctrl-C), 143 when stopped by SIGTERM.",
    )
    rep.add_argument(
        "results",
        nargs="+",
        metavar="RESULT",
        help="fig2, fig3, fig4, fig5, table1, fig6, all, or a spec file (.yaml)",
    )
    rep.add_argument(
        "--quick",
        action="store_true",
        help="a few rounds on one setting and seed: minutes, for smoke tests",
    )
    rep.add_argument(
        "--out",
        default=None,
        help="where figures, tables and REPORT.md go (default: RUNS/results)",
    )
    rep.add_argument(
        "--runs", default=None, help="run store (default runs/reproduce, or runs/reproduce-quick)"
    )
    rep.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a REPORT.md in --out even when it covers more finished runs",
    )
    rep.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs in parallel (default: the number of cores; --backend ray: as many as the "
        "cluster's resources take)",
    )
    rep.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per run (default: the cores shared out among the jobs, at least 1)",
    )
    rep.add_argument("--seeds", default=None, help="comma-separated seeds instead of the spec's")
    rep.add_argument(
        "--data-dir",
        default=None,
        help="dataset root for every run (default: $FLWBC_DATA_DIR, then the cache, then a "
        "download); not part of a run's identity",
    )
    rep.add_argument(
        "--no-run",
        action="store_true",
        help="only rewrite figures, tables and the report from finished runs",
    )
    rep.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_backend_args(rep)

    mat = sub.add_parser(
        "matrix",
        help="every attack against every defense: a table and a heatmap",
        description="Run an attack x defense matrix from its spec (resumable: rerun the same "
        "command to continue), then write cells.csv, matrix.md and heatmap.png|svg into --out. "
        "Each cell is a branch from one warm model, compared with the same defense without "
        "attack. The bundled matrix (Fashion-MNIST IID, 2 of 10 clients malicious in rounds "
        "1-10 of 20) takes about 1.5 h of compute on 2 cores. Exit status: 0 when every run "
        "finished, 1 when any failed, 2 on bad input, 130 when interrupted (Ctrl-C), 143 when "
        "stopped by SIGTERM.",
    )
    mat.add_argument(
        "spec",
        nargs="?",
        default=DEFAULT_MATRIX,
        help=f"a bundled matrix or a spec file (.yaml). Bundled: {bundled_help()}",
    )
    mat.add_argument("--quick", action="store_true", help="a few rounds: minutes, a smoke test")
    mat.add_argument("--runs", default=None, help="run store (default runs/matrix)")
    mat.add_argument("--out", default=None, help="where the outputs go (default: RUNS/results)")
    mat.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a cells.csv in --out even when it holds more finished cells",
    )
    mat.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs in parallel (default: cores; --backend ray: as the cluster's resources take)",
    )
    mat.add_argument("--threads", type=int, default=None, help="torch threads per run")
    mat.add_argument(
        "--data-dir",
        default=None,
        help="dataset root for every run (default: $FLWBC_DATA_DIR, then the cache, then a "
        "download); not part of a run's identity",
    )
    mat.add_argument("--no-run", action="store_true", help="only rewrite the outputs")
    mat.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_backend_args(mat)
    from flwbc.cli_bench import add_bench_parser

    add_bench_parser(sub)
    return parser


def _add_backend_args(parser: argparse.ArgumentParser) -> None:
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


def _config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    data = load_config_file(args.config) if args.config else {}
    data.pop("_meta", None)
    types_by_path = {d: a for d, a, _ in _fields(ExperimentConfig)}
    for key, raw in vars(args).items():
        if key.startswith("cfg:") and raw is not None:
            dotted = key[4:]
            set_dotted(data, dotted, _parse_value(raw, types_by_path[dotted]))
    for item in args.set:
        if "=" not in item:
            raise FlwbcError(f"--set expects KEY=VALUE, got '{item}'")
        dotted, raw = item.split("=", 1)
        ann = types_by_path.get(dotted.strip(), Any)
        set_dotted(data, dotted.strip(), _parse_value(raw, ann))
    return make_config(data)


def _spans(rounds: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    parts: list[list[int]] = []
    for r in rounds:
        if parts and r == parts[-1][1] + 1:
            parts[-1][1] = r
        else:
            parts.append([r, r])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in parts)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def summary_lines(run_dir: Path, summary: dict[str, Any]) -> list[str]:
    """A run's closing lines: its accuracy, the measure its attack is judged by (backdoor
    success, D_M confidence and mitigation rounds, or the accuracy drop against a paired clean
    run) and, when a rule flags clients, its detection counts."""
    from flwbc.config import load_run_config
    from flwbc.metrics import attack_kind
    from flwbc.runio import read_jsonl

    acc = summary.get("final_test_acc")
    lines = [
        f"run directory: {run_dir}",
        f"rounds: {summary['rounds_done']}  final test accuracy: "
        f"{'-' if acc is None else f'{acc:.4f}'}",
    ]
    adversarial = summary.get("adversarial_rounds") or []
    if not adversarial:
        return lines
    cfg = load_run_config(run_dir)
    records = read_jsonl(run_dir / "rounds.jsonl")
    kind, _ = attack_kind(cfg.attack.model_dump(), records)
    named = cfg.attack.name if cfg.attack.name == kind else f"{cfg.attack.name} ({kind})"
    lines.append(f"attack: {named}, adversarial rounds {_spans(adversarial)}")
    last = records[-1] if records else {}
    if kind == "backdoor":
        during = [
            r["backdoor_acc"]
            for r in records
            if r["adversarial"] and r.get("backdoor_acc") is not None
        ]
        mean = sum(during) / len(during) if during else None
        lines.append(
            f"backdoor success: {_pct(last.get('backdoor_acc'))} at round {last.get('round')} "
            f"(mean over the adversarial rounds {_pct(mean)})"
        )
        for level, windows in summary.get("backdoor_mitigation", {}).items():
            for w in windows:
                shown = w["rounds"] if w["rounds"] is not None else f"> {w['observed']}"
                lines.append(
                    f"attack window {w['round']}-{w['last_round']}: backdoor success below "
                    f"{float(level):.0%} after {shown} rounds"
                )
    elif kind == "targeted":
        conf = last.get("target_conf")
        lines.append(
            f"misclassification confidence on D_M: {'-' if conf is None else f'{conf:.4f}'} "
            f"at round {last.get('round')}"
        )
        for m in summary.get("mitigation", []):
            shown = (
                m["rounds"]
                if m["rounds"] is not None
                else f"> {m['observed']} (not within the run)"
            )
            lines.append(f"adversarial round {m['round']}: attack mitigation rounds {shown}")
    elif kind == "untargeted":
        drops = [r["acc_drop"] for r in records if r.get("acc_drop") is not None]
        if drops:
            lines.append(
                f"accuracy drop against the clean run: {100 * drops[-1]:.1f} points at round "
                f"{last.get('round')}"
            )
        else:
            lines.append(
                "accuracy drop: not measured (run the same config without the attack, then add "
                "eval.metrics: [{name: accuracy_drop, options: {clean_run: DIR}}])"
            )
    det = summary.get("detection")
    if det:
        rule = cfg.server.aggregator
        attackers, benign = det["tp"] + det["fn"], det["fp"] + det["tn"]
        prec = "-" if det["precision"] is None else f"{det['precision']:.2f}"
        rec = "-" if det["recall"] is None else f"{det['recall']:.2f}"
        lines.append(
            f"detection ({rule}, summed over the rounds): attacker rows flagged {det['tp']} of "
            f"{attackers}, benign rows flagged {det['fp']} of {benign}; precision {prec}, "
            f"recall {rec}"
        )
    return lines


def _print_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    print("\n".join(summary_lines(run_dir, summary)))


_MEASURE_COLUMNS = {
    "backdoor": ("backdoor", "backdoor_acc"),
    "targeted": ("conf", "target_conf"),
    "untargeted": ("acc drop", "acc_drop"),
}


def compare_table(run_dirs: list[Path]) -> str:
    """A Markdown table: per round and run, whether the round was adversarial in that run, its
    test accuracy and the measure its attack is judged by (backdoor success, D_M confidence, or
    the accuracy drop when recorded); then each targeted run's attack mitigation rounds."""
    from flwbc.config import load_run_config
    from flwbc.metrics import attack_kind, mitigation_rounds
    from flwbc.runio import read_jsonl

    runs = {d.name: read_jsonl(d / "rounds.jsonl") for d in run_dirs}
    kinds: dict[str, str] = {}
    for d in run_dirs:
        recs = runs[d.name]
        if not recs:
            raise FlwbcError(f"no rounds recorded in {d.name}")
        attacked = any(r["adversarial"] for r in recs)
        attack = load_run_config(d).attack.model_dump()
        kinds[d.name] = attack_kind(attack, recs)[0] if attacked else "clean"
    columns: dict[str, list[tuple[str, str]]] = {}
    for n, kind in kinds.items():
        measure = _MEASURE_COLUMNS.get(kind)
        if measure and not any(r.get(measure[1]) is not None for r in runs[n]):
            measure = None  # e.g. an untargeted run without a paired clean run
        columns[n] = [("adv", "adversarial"), ("acc", "test_acc"), *([measure] if measure else [])]
    head = "| round |" + "".join(
        f" {n} {label} |" for n, cols in columns.items() for label, _ in cols
    )
    width = 1 + sum(len(c) for c in columns.values())
    lines = [head, "|" + "---|" * width]
    by_round = {n: {r["round"]: r for r in recs} for n, recs in runs.items()}
    for t in sorted({r["round"] for recs in runs.values() for r in recs}):
        cells = []
        for n, cols in columns.items():
            r = by_round[n].get(t)
            for _, field in cols:
                value = None if r is None else r.get(field)
                if field == "adversarial":
                    cells.append("yes" if value else "")
                else:
                    cells.append("" if value is None else f"{value:.4f}")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines.append("")
    for n, recs in runs.items():
        for m in mitigation_rounds(recs) if kinds[n] == "targeted" else []:
            shown = m["rounds"] if m["rounds"] is not None else f"> {m['observed']}"
            lines.append(f"{n}: adversarial round {m['round']}: mitigation rounds {shown}")
    return "\n".join(lines)


def _analyze(args: argparse.Namespace) -> None:
    from flwbc.analysis.aep import AEPOptions, analyze_run
    from flwbc.runio import read_jsonl

    for name in ("rounds", "estimator_rounds", "hessian_clients", "hutchinson_samples"):
        value = getattr(args, name)
        if value is not None and value < (1 if name in ("rounds", "hutchinson_samples") else 0):
            raise FlwbcError(f"--{name.replace('_', '-')} must be positive, got {value}")
    opts = AEPOptions(
        rounds=args.rounds,
        estimator_rounds=args.estimator_rounds,
        hessian_clients=args.hessian_clients,
        hutchinson_samples=args.hutchinson_samples,
    )
    written = {}
    for d in args.run_dirs:
        path = analyze_run(d, opts, progress=not args.no_progress)
        written[Path(d).name] = read_jsonl(path)
        print(path)
    if args.plot:
        from flwbc.plots import plot_aep

        for f in plot_aep(written, Path(args.plot)):
            print(f)


def _compare_rules(args: argparse.Namespace) -> None:
    from flwbc.analysis.rules import Rule, compare_rules_run
    from flwbc.config import load_run_config

    if args.rounds is not None and args.rounds < 1:
        raise FlwbcError(f"--rounds must be positive, got {args.rounds}")
    load_run_config(args.run_dir)  # loads the run's plug-ins, which a rule may name
    rules = [Rule.parse(text) for text in args.rule]
    progress = not args.no_progress
    written = compare_rules_run(
        args.run_dir, rules, rounds=args.rounds, test=not args.no_test, progress=progress
    )
    print(written[1].read_text())
    for path in written:
        print(path)


def _reproduce(args: argparse.Namespace, argv: list[str] | None) -> int:
    from flwbc.experiments.reproduce import reproduce

    _check_workers(args)
    seeds = None
    if args.seeds:
        try:
            seeds = [int(s) for s in args.seeds.split(",")]
        except ValueError:
            raise FlwbcError(f"--seeds takes comma-separated integers: {args.seeds!r}") from None
    store, out, command = _sweep_places(args, argv, "reproduce")
    sweep, report_path = reproduce(
        args.results,
        out=out,
        store=store,
        quick=args.quick,
        jobs=args.jobs,
        threads=args.threads,
        seeds=seeds,
        data_dir=args.data_dir,
        run=not args.no_run,
        progress=not args.no_progress,
        command=command,
        overwrite=args.overwrite,
        **_sweep_backend(args),
    )
    print(report_path)
    return _sweep_status(sweep)


def _sweep_status(sweep: SweepReport | None) -> int:
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


def _sweep_places(
    args: argparse.Namespace, argv: list[str] | None, name: str
) -> tuple[Path, Path, str]:
    """A sweep command's run store (default `runs/NAME`, `runs/NAME-quick` with --quick), its
    output folder (default `STORE/results`) and the command line as typed."""
    default = Path(f"runs/{name}-quick" if args.quick else f"runs/{name}")
    store = Path(args.runs) if args.runs else default
    out = Path(args.out) if args.out else store / "results"
    return store, out, " ".join(["flwbc", *(argv if argv is not None else sys.argv[1:])])


def _check_workers(args: argparse.Namespace) -> None:
    for name in ("jobs", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise FlwbcError(f"--{name} must be at least 1, got {value}")


def _sweep_backend(args: argparse.Namespace) -> dict[str, Any]:
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


def _matrix(args: argparse.Namespace, argv: list[str] | None) -> int:
    from flwbc.experiments.matrix import run_matrix

    _check_workers(args)
    store, out, command = _sweep_places(args, argv, "matrix")
    sweep, files = run_matrix(
        args.spec,
        store=store,
        out=out,
        quick=args.quick,
        jobs=args.jobs,
        threads=args.threads,
        data_dir=args.data_dir,
        run=not args.no_run,
        progress=not args.no_progress,
        command=command,
        overwrite=args.overwrite,
        **_sweep_backend(args),
    )
    for path in files:
        print(path)
    return _sweep_status(sweep)


def _flower(args: argparse.Namespace) -> None:
    from flwbc.flower import require_flwr

    require_flwr()
    if args.flower_command == "partitions":
        from flwbc.flower.partitions import export_partitions

        paths = export_partitions(_config_from_args(args), args.dir)
        print(f"wrote {len(paths)} partition files to {args.dir}")
    else:
        from flwbc.flower.appdir import write_app

        print(write_app(args.dir))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with stop_on_sigterm():  # SIGTERM stops as Ctrl-C does: finished rounds saved
        return _dispatch(args, argv)


def _dispatch(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Run the parsed command; its exit status (2 for a user mistake, 130 after Ctrl-C, 143
    after SIGTERM)."""
    status = 0
    try:
        if args.command == "run":
            from flwbc.api import run

            if args.resume:
                given = [
                    k[4:]
                    for k, v in vars(args).items()
                    if k.startswith("cfg:") and v is not None and k != "cfg:threads"
                ]
                if given or args.config or args.set:
                    raise FlwbcError(
                        "--resume continues a run exactly as it was configured; drop "
                        + ", ".join(
                            given
                            + (["--config"] if args.config else [])
                            + (["--set"] if args.set else [])
                        )
                    )
                raw = getattr(args, "cfg:threads", None)
                if raw is not None and (not raw.isdigit() or int(raw) < 1):
                    raise FlwbcError(f"--threads must be an integer >= 1, got '{raw}'")
                result = run(
                    resume=args.resume,
                    progress=not args.no_progress,
                    threads=None if raw is None else int(raw),
                    announce=True,
                )
            else:
                result = run(_config_from_args(args), progress=not args.no_progress)
            _print_summary(result.run_dir, result.summary)
        elif args.command == "list":
            from flwbc.catalog import catalog, render
            from flwbc.plugins import load_plugins

            load_plugins([m.strip() for m in args.plugins.split(",") if m.strip()])
            print(render(catalog(args.kind)), end="")
        elif args.command == "summary":
            from flwbc.runio import read_json

            _print_summary(Path(args.run_dir), read_json(Path(args.run_dir) / "summary.json"))
        elif args.command == "compare":
            print(compare_table([Path(d) for d in args.run_dirs]))
        elif args.command == "analyze":
            _analyze(args)
        elif args.command == "compare-rules":
            _compare_rules(args)
        elif args.command == "reproduce":
            status = _reproduce(args, argv)
        elif args.command == "matrix":
            status = _matrix(args, argv)
        elif args.command == "bench":
            from flwbc.cli_bench import bench_command

            status = bench_command(args, argv)
        elif args.command == "flower":
            _flower(args)
        elif args.command == "fetch":
            from flwbc.data import resolve_dataset_dir

            print(resolve_dataset_dir(args.dataset, args.data_dir))
    except FlwbcError as err:
        print(f"flwbc: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(_stopped_line(args.command, err), file=sys.stderr)
        return 143 if isinstance(err, Terminated) else 130
    return status


def _stopped_line(command: str, err: KeyboardInterrupt) -> str:
    """What Ctrl-C (SIGINT) or SIGTERM stopped, and how to continue it."""
    # Ctrl-C: off the line the terminal echoed ^C on
    what = "flwbc: stopped by SIGTERM" if isinstance(err, Terminated) else "\nflwbc: interrupted"
    if command in ("reproduce", "matrix", "bench"):
        return f"{what}; finished rounds are saved, run the same command again to continue"
    if command == "run":
        where = getattr(err, "run_dir", "RUN_DIR")
        return f"{what}; finished rounds are saved, continue with 'flwbc run --resume {where}'"
    return what


if __name__ == "__main__":
    sys.exit(main())

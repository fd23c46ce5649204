"""`flwbc bench run` and `flwbc bench evaluate`: the leaderboard protocol, and one defense of a
user's placed on it (`flwbc.experiments.bench`); `flwbc bench pack` and `unpack`: its runs'
records as one archive (`flwbc.experiments.pack`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from flwbc.cli.common import add_data_dir_arg, check_workers
from flwbc.errors import FlwbcError

NAME = "bench"
ORDER = 10
RESUMES: str | None = "sweep"
"""What an interruption leaves: 'run' (continue with --resume), 'sweep' (rerun the command)."""
DEFAULT_BENCH = "leaderboard"
STORED = "results/leaderboard"
"""Where the built-in defenses' results are committed (compared without recomputing them)."""


def add_parser(sub: Any) -> None:
    bench = sub.add_parser(
        "bench",
        help="rank defenses by their worst case over attacks, across settings and seeds",
        description="The leaderboard protocol (docs/bench.md): every attack against every "
        "defense in every setting of a bench spec, screened with one seed, then more seeds on "
        "each defense's worst attacks. Resumable: rerun the same command to continue. Exit "
        "status: 0 when every run finished, 1 when any failed, 2 on bad input, 130 when "
        "interrupted, 143 when stopped by SIGTERM.",
    )
    bsub = bench.add_subparsers(dest="bench_command", required=True, metavar="COMMAND")
    run = bsub.add_parser(
        "run",
        help="run a bench spec and write its leaderboard",
        description="Run every cell of a bench spec (resumably), then write cells.csv, "
        "summary.csv, worst.csv, ranking.csv, leaderboard.md and one heatmap per regime into "
        "--out.",
    )
    run.add_argument("spec", nargs="?", default=DEFAULT_BENCH, help="bundled bench or .yaml")
    _common(run, "bench")
    ev = bsub.add_parser(
        "evaluate",
        help="place one defense on the stored leaderboard",
        description="Run one defense (a partial config: server rule, pre-aggregation steps, "
        "client defenses, from a plug-in or built in) through a bench spec's protocol and "
        "compare it with the stored results of the others (--against), without recomputing "
        "them; writes report.md and the merged leaderboard into --out. --quick runs the "
        "spec's quick settings only.",
    )
    ev.add_argument("spec", nargs="?", default=DEFAULT_BENCH, help="bundled bench or .yaml")
    ev.add_argument(
        "--defense",
        required=True,
        help="the defense as a partial config, YAML inline or a file, e.g. "
        '"{server: {aggregator: my_rule, options: {k: 3}}}"',
    )
    ev.add_argument("--name", default=None, help="its name on the leaderboard (default: derived)")
    ev.add_argument(
        "--plugins", default="", help="comma-separated modules that register the defense"
    )
    ev.add_argument(
        "--against",
        default=STORED,
        help=f"the stored leaderboard results to compare with (default {STORED})",
    )
    _common(ev, "bench-evaluate")
    pack = bsub.add_parser(
        "pack",
        help="write a bench's finished runs into one archive of their records",
        description="Write the finished runs of a bench spec (screening and confirming seeds) "
        "into one tar.xz of their records, without their models except the warm-ups': what a "
        "committed leaderboard is computed from. Rewrites --out.",
    )
    pack.add_argument("spec", nargs="?", default=DEFAULT_BENCH, help="bundled bench or .yaml")
    pack.add_argument("--runs", default=None, help="run store (default runs/bench)")
    pack.add_argument("--out", required=True, help="the archive to write (.tar.xz)")
    pack.add_argument("--quick", action="store_true", help="the spec's quick settings only")
    pack.add_argument("--force", action="store_true", help="replace an --out that holds more runs")
    unpack = bsub.add_parser(
        "unpack",
        help="add the runs of an archive to a run store",
        description="Add the runs of an archive written by `flwbc bench pack` to a run store, "
        "keeping every run the store already holds; then `flwbc bench run --no-run` rebuilds "
        "the leaderboard from them, or `flwbc bench run` continues the bench.",
    )
    unpack.add_argument("archive", help="the archive (.tar.xz)")
    unpack.add_argument("--runs", default="runs/bench", help="run store (default runs/bench)")


def _common(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("--quick", action="store_true", help="the spec's quick settings only")
    p.add_argument("--runs", default=None, help=f"run store (default runs/{name})")
    p.add_argument("--out", default=None, help="where the outputs go (default: RUNS/results)")
    p.add_argument("--jobs", type=int, default=None, help="runs in parallel (default: cores)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run")
    add_data_dir_arg(p)
    p.add_argument("--no-run", action="store_true", help="only rewrite the outputs")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace outputs that hold more finished runs than this store gives",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _defense_config(text: str) -> dict[str, Any]:
    path = Path(text)
    if text.endswith((".yaml", ".yml", ".json")) and path.is_file():
        text = path.read_text()
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise FlwbcError(f"--defense: cannot parse {text!r}: {err}") from None
    if not isinstance(value, dict):
        raise FlwbcError(
            f'--defense takes a partial config mapping, e.g. "{{server: {{aggregator: '
            f'median}}}}", got {text!r}'
        )
    return value


def _derived_name(cfg: dict[str, Any]) -> str:
    server = cfg.get("server", {})
    client = cfg.get("defense", {}).get("client")
    parts = [str(client)] if client not in (None, "none") else []
    if server.get("aggregator"):
        parts.append(str(server["aggregator"]))
    return " + ".join(parts) or "defense"


def _store(args: argparse.Namespace) -> Path:
    name = "bench-evaluate" if args.bench_command == "evaluate" else "bench"
    return Path(args.runs or (f"runs/{name}-quick" if args.quick else f"runs/{name}"))


def _pack_or_unpack(args: argparse.Namespace) -> int:
    from flwbc.experiments.bench import bench_runs, load_bench
    from flwbc.experiments.pack import pack_runs, unpack_runs
    from flwbc.runtime import Terminated

    try:
        if args.bench_command == "unpack":
            got = unpack_runs(Path(args.archive), Path(args.runs))
            print(
                f"{got.added} runs added to {args.runs}; {got.kept} it held finished and "
                f"{got.unfinished} unfinished were kept (a bench run continues those)"
            )
            return 0
        store = _store(args)
        runs, _ = bench_runs(load_bench(args.spec), store, quick=args.quick, run=False)
        packed, models = pack_runs(runs, store, Path(args.out), force=args.force)
        print(f"{packed} of {len(runs)} runs packed into {args.out} ({models} with their model)")
        return 0
    except KeyboardInterrupt as err:
        what = "stopped by SIGTERM" if isinstance(err, Terminated) else "interrupted"
        done = (
            "the runs added so far are whole; run it again to add the rest"
            if args.bench_command == "unpack"
            else f"{args.out} is unchanged"
        )
        print(f"\nflwbc: {what}; {done}", file=sys.stderr)
        return 143 if isinstance(err, Terminated) else 130


TABLES_EVERY = 60.0
"""Seconds between rewrites of cells.csv while a bench runs (so an interrupted one leaves it)."""


def command(args: argparse.Namespace, argv: list[str] | None) -> int:
    from flwbc.experiments.bench import (
        GRID,
        BenchCell,
        bench_runs,
        check_stored,
        collect_bench,
        load_bench,
        read_cells,
    )
    from flwbc.experiments.bench_report import (
        card_inputs,
        report_card,
        write_bench,
        write_bench_cells,
    )
    from flwbc.experiments.specs import RunSpec
    from flwbc.plots import require_matplotlib

    if args.bench_command in ("pack", "unpack"):
        return _pack_or_unpack(args)
    spec = load_bench(args.spec)
    require_matplotlib()
    check_workers(args)
    store = _store(args)
    out = Path(args.out) if args.out else store / "results"
    command = " ".join(["flwbc", *(argv if argv is not None else sys.argv[1:])])
    sweep_options = {
        "jobs": args.jobs,
        "threads": args.threads,
        "progress": not args.no_progress,
    }
    defenses = None
    stored = []
    if args.bench_command == "evaluate":
        from flwbc.plugins import load_plugins

        mods = [m.strip() for m in args.plugins.split(",") if m.strip()]
        load_plugins(mods)
        cfg = _defense_config(args.defense)
        if GRID in cfg:
            raise FlwbcError("--defense: a grid belongs in a bench spec; evaluate one config")
        if mods:
            cfg = {**cfg, "plugins": [*cfg.get("plugins", []), *mods]}
        label = args.name or _derived_name(cfg)
        against = Path(args.against) / "cells.csv"
        if not against.is_file():
            raise FlwbcError(
                f"--against: no stored board at {against} (the committed one is "
                f"{STORED} in a checkout of the repository; run from its root or give the path)"
            )
        stored = read_cells(against)
        check_stored(spec, stored, against)
        taken = {*spec.defenses, *spec.families.values(), *(c.defense for c in stored)}
        if label in taken:
            raise FlwbcError(f"a defense named '{label}' is on the leaderboard; choose --name")
        spec.defenses[label] = cfg
        defenses = [label]

    def tables(runs: list[RunSpec]) -> list[BenchCell]:
        cells = collect_bench(spec, runs, store)
        if defenses is None:
            return cells
        mine = {(c.regime, c.setting) for c in cells}
        return card_inputs([c for c in stored if (c.regime, c.setting) in mine], cells, defenses[0])

    existing = out / "cells.csv"
    before = 0
    if existing.is_file() and not args.overwrite:
        before = sum(c.run is not None for c in read_cells(existing))

    def partial(runs: list[RunSpec]) -> None:  # never a table with fewer finished cells
        cells = tables(runs)
        if sum(c.run is not None for c in cells) >= before:
            write_bench_cells(spec, cells, out)

    runs, reports = bench_runs(
        spec,
        store,
        quick=args.quick,
        defenses=defenses,
        data_dir=args.data_dir,
        run=not args.no_run,
        sweep_options={**sweep_options, "progress_every": TABLES_EVERY},
        on_progress=partial,
    )
    cells = tables(runs)
    done = sum(c.run is not None for c in cells)
    if done < before:  # 0 with --overwrite
        raise FlwbcError(
            f"{existing} holds {before} finished runs and this would replace it with {done} "
            "(a --quick or smaller selection, or a store without its runs); give another "
            "--out, point --runs at its store, or pass --overwrite"
        )
    if args.bench_command == "evaluate":
        assert defenses is not None
        files = write_bench(spec, cells, out, command=command)
        card = out / "report.md"
        from flwbc.runio import atomic_write_bytes

        atomic_write_bytes(card, report_card(spec, defenses[0], cells, command=command).encode())
        files.insert(0, card)
    else:
        files = write_bench(spec, cells, out, command=command)
    for path in files:
        print(path)
    # a warm-up is listed again in each confirming sweep that needs it: count runs once
    failures = {key: why for r in reports for key, why in r.failed.items()}
    finished = {key for r in reports for key in r.finished} - set(failures)
    if reports:
        print(f"{len(finished)} runs finished, {len(failures)} failed", file=sys.stderr)
        for key, why in failures.items():
            print(f"  failed {key}: {why}", file=sys.stderr)
    return 1 if failures else 0

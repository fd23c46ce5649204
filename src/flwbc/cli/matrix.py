"""`flwbc matrix`: every attack against every defense, a table and a heatmap."""

from __future__ import annotations

import argparse
from typing import Any

from flwbc.cli.common import (
    add_backend_args,
    add_data_dir_arg,
    check_workers,
    sweep_backend,
    sweep_places,
    sweep_status,
)

NAME = "matrix"
ORDER = 9
RESUMES: str | None = "sweep"
"""What an interruption leaves: 'run' (continue with --resume), 'sweep' (rerun the command)."""


def add_parser(sub: Any) -> None:
    from flwbc.experiments.matrix import DEFAULT_MATRIX, bundled_help

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
    add_data_dir_arg(mat)
    mat.add_argument("--no-run", action="store_true", help="only rewrite the outputs")
    mat.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_backend_args(mat)


def command(args: argparse.Namespace, argv: list[str] | None) -> int:
    from flwbc.experiments.matrix import run_matrix

    check_workers(args)
    store, out, command = sweep_places(args, argv, "matrix")
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
        **sweep_backend(args),
    )
    for path in files:
        print(path)
    return sweep_status(sweep)

"""`flwbc analyze`: the attack effect on parameters (AEP) of runs, with its counterfactual."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flwbc.errors import FlwbcError

NAME = "analyze"
ORDER = 6
RESUMES: str | None = None
"""What an interruption leaves: 'run' (continue with --resume), 'sweep' (rerun the command)."""


def add_parser(sub: Any) -> None:
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


def command(args: argparse.Namespace, argv: list[str] | None) -> int:
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
    return 0

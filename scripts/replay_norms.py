"""Replay a run along its own trajectory and print, per round, the mean training loss, the norm
of every update the server receives (attackers marked *), the norm of the model's step, and
the rule's own info (for DnC: the rows it kept and flagged). Shows how one outlying update
travels through an attack and a rule (results/leaderboard/README.md, "Found while screening").

usage: python scripts/replay_norms.py RUN_DIR ROUNDS
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor

from flwbc.analysis.replay import replay_start
from flwbc.config import load_run_config
from flwbc.engine import replay_engine
from flwbc.errors import FlwbcError
from flwbc.round import aggregate_round


def main(run: str, rounds: int) -> int:
    cfg = load_run_config(run)
    exp, w = replay_start(cfg)
    engine = replay_engine(cfg.engine)
    for t in range(1, rounds + 1):
        plan = exp.round_plan(t)
        u = engine.round_updates(exp, plan, w)
        seen: list[list[float]] = []  # norms as received, before any step can change them

        def received(r: Tensor, into: list[list[float]] = seen) -> None:
            into.append(torch.linalg.vector_norm(r, dim=1).tolist())

        res = aggregate_round(exp, plan, w, u.updates, u.mean_loss, u.stats, received)
        norms = seen[0]
        marked = [f"{'*' if m else ''}{n:.3g}" for n, m in zip(norms, plan.malicious, strict=True)]
        step = torch.linalg.vector_norm(res.weights - w).item()
        print(f"round {t}: loss {u.mean_loss!r}, clients {plan.clients}")
        print(f"  update norms {marked}, step {step:.3g}")
        print(f"  {res.info.get('aggregator')} {res.info.get('detection')}", flush=True)
        w = res.weights
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or not sys.argv[2].isdigit():
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(main(sys.argv[1], int(sys.argv[2])))
    except (FlwbcError, OSError) as err:
        print(f"replay_norms: {err}", file=sys.stderr)
        sys.exit(2)

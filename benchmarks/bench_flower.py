"""The same experiment natively (sequential and batched engines) and on Flower's simulation
engine (Ray), side by side: per-round seconds, start-up, and the results.

Setting: Fashion-MNIST IID, 100 clients, 10 a round, E=1/B=32, FL-WBC (s = 0.4), five attackers
in round 2, evaluation every round. Per engine it prints the median seconds per round (from the
run's timings.jsonl: training, aggregation and the test-set evaluation), the wall time of the
whole call, the start-up (wall time minus the rounds), and the final accuracy, the target's
confidence and the largest difference of the final model from the sequential engine's.

Flower runs every ClientApp in a Ray actor with `--flower-cpus` cores each (1: one actor per
core), so its per-round time is the client updates spread over the actors plus Flower's messaging.

usage: python benchmarks/bench_flower.py [--rounds 6] [--data-dir DIR] [--train-fraction F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import parse_with_allocator_flag

import flwbc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--flower-cpus", type=float, default=1.0)
    ap.add_argument(
        "--train-fraction",
        type=float,
        default=1.0,
        help="share of each client's data used; 0.01 leaves ~6 images a client, so the round "
        "time is mostly the engine's own overhead",
    )
    args = parse_with_allocator_flag(ap)
    out = Path(tempfile.mkdtemp(prefix="bench-flower-"))
    base = {
        "seed": 0,
        "data": {"dir": args.data_dir, "train_fraction": args.train_fraction},
        "federation": {"num_clients": 100, "clients_per_round": 10, "rounds": args.rounds},
        "local": {"epochs": 1, "batch_size": 32},
        "attack": {"rounds": [2]},
        "defense": {"client": "wbc", "wbc": {"s": 0.4}},
        "output": {"dir": str(out)},
        "threads": args.threads,
    }
    rows, weights = [], {}
    for engine in ("sequential", "batched", "flower"):
        cfg = flwbc.make_config(
            base, engine=engine, **{"output.name": engine, "flower.num_cpus": args.flower_cpus}
        )
        t0 = time.perf_counter()
        res = flwbc.run(cfg, progress=False)
        wall = time.perf_counter() - t0
        timings = [json.loads(x) for x in (res.run_dir / "timings.jsonl").read_text().splitlines()]
        per_round = [t["seconds"] for t in timings]
        weights[engine] = res.weights
        rows.append(
            (
                engine,
                statistics.median(per_round),
                wall,
                wall - sum(per_round),
                res.summary["final_test_acc"],
                res.summary["final_target_conf"],
            )
        )
    ref = weights["sequential"]
    print(
        f"{args.rounds} rounds, torch threads {args.threads}, Flower cores per client "
        f"{args.flower_cpus}; run dirs in {out}"
    )
    print("| engine | median s/round | wall s | start-up s | final acc | target conf | max |Δw| |")
    print("|---|---|---|---|---|---|---|")
    for engine, med, wall, start, acc, conf in rows:
        dw = (weights[engine] - ref).abs().max().item()
        print(
            f"| {engine} | {med:.2f} | {wall:.1f} | {start:.1f} | {acc:.4f} | {conf:.4f} "
            f"| {dw:.1e} |"
        )


if __name__ == "__main__":
    main()

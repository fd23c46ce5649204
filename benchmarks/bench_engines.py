"""Benchmark the sequential and batched engines against the machine's compute floor.

For each setting (dataset × local schedule, FL-WBC on, 10 clients a round), the engines run
interleaved (A B A B ...) so that a passing foreign load hits both. Per engine it prints:
- median seconds per round (training and the full test-set evaluation);
- training images per second;
- achieved GFLOP/s;
- the ratio to the compute floor.

The compute floor is the round's FLOPs divided by the best throughput the same model reaches on
single large batches (128 to 512 images, forward+backward for training, forward for evaluation,
both memory layouts), measured in the same run. The float32 matmul peak is measured too, for
scale. FLOPs are counted by torch's FlopCounterMode.

With --sweep it instead times a 10-run sweep (FL-WBC s = 0.1 ... 1.0, E=1/B=32, evaluation
every round) run batched with `flwbc.run_many` against the same runs one after another
(`flwbc.run`, batched engine), interleaved, and prints training images per second.

usage: python benchmarks/bench_engines.py [--rounds 3] [--data-dir DIR] [--quick] [--sweep]
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from _common import parse_with_allocator_flag
from torch.utils.flop_counter import FlopCounterMode

import flwbc
from flwbc.engine import batched, sequential
from flwbc.experiment import Experiment
from flwbc.metrics import evaluate


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times) / 1e9


def forward_flops(exp: Experiment) -> float:
    """FLOPs of one image's forward pass."""
    x = torch.zeros(1, *exp.dataset.image_shape)
    with FlopCounterMode(display=False) as counter:
        exp.model(exp.initial_weights(), x)
    return float(counter.get_total_flops())


def best_throughput(exp: Experiment, train: bool) -> float:
    """Images per second of the plain nn.Module on single large batches: the best over batch
    sizes 128-512 and both memory layouts (weights and input alike)."""
    best = 0.0
    for layout in (torch.contiguous_format, torch.channels_last):
        module = copy.deepcopy(exp.model.module).to(memory_format=layout)
        for bs in (128, 256, 512):
            x = torch.randn(bs, *exp.dataset.image_shape).contiguous(memory_format=layout)
            y = torch.randint(0, 10, (bs,))
            times = []
            for _ in range(4):
                t = time.perf_counter()
                if train:
                    module.zero_grad()
                    F.nll_loss(module(x), y).backward()
                else:
                    with torch.inference_mode():
                        module(x)
                times.append(time.perf_counter() - t)
            best = max(best, bs / statistics.median(times[1:]))
    return best


def sweep(data_dir: str | None, rounds: int) -> None:
    """A 10-run sweep over FL-WBC's s: batched together against one run after another."""
    print("| dataset | mode | seconds | train img/s | ratio |")
    print("|---|---|---|---|---|")
    for ds in ("cifar10", "fmnist"):

        def cfgs(out: str, ds: str = ds) -> list[flwbc.ExperimentConfig]:
            return [
                flwbc.make_config(
                    {
                        "data": {"name": ds, "dir": data_dir},
                        "federation": {"rounds": rounds},
                        "local": {"epochs": 1, "batch_size": 32},
                        "defense": {"client": "wbc", "wbc": {"s": round(0.1 * (i + 1), 1)}},
                        "attack": {"prob": 0.0},
                        "output": {"dir": out, "name": f"s{i}"},
                    }
                )
                for i in range(10)
            ]

        times: dict[str, list[float]] = {"one after another": [], "batched sweep": []}
        for _ in range(2):
            for mode in times:
                with tempfile.TemporaryDirectory() as out:
                    configs = cfgs(out)
                    tick = time.perf_counter()
                    if mode == "batched sweep":
                        flwbc.run_many(configs, progress=False)
                    else:
                        for c in configs:
                            flwbc.run(c, progress=False)
                    times[mode].append(time.perf_counter() - tick)
        images = 10 * rounds * 10 * 600  # runs × rounds × clients × samples (IID, E=1)
        if ds == "cifar10":
            images = 10 * rounds * 10 * 500
        base = min(times["one after another"])
        for mode, ts in times.items():
            sec = min(ts)
            print(f"| {ds} | {mode} | {sec:.1f} | {images / sec:.0f} | {base / sec:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per engine and setting")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--quick", action="store_true", help="only the paper's E=1/B=32 setting")
    ap.add_argument("--sweep", action="store_true", help="time a 10-run sweep instead")
    args = parse_with_allocator_flag(ap)
    if args.sweep:
        sweep(args.data_dir, args.rounds)
        return

    peak = matmul_peak()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"float32 matmul peak {peak:.0f} GFLOP/s"
    )
    settings = [(d, e, b) for d in ("fmnist", "cifar10") for e, b in ((1, 32), (10, 10))]
    if args.quick:
        settings = [s for s in settings if s[1] == 1]
    header = (
        "| dataset | E/B | engine | s/round | train img/s | GFLOP/s | floor s/round "
        "| × floor | peak RSS MB | floor train / eval img/s |"
    )
    print(header)
    print("|" + "---|" * 10)
    for ds, epochs, bs in settings:
        cfg = flwbc.make_config(
            {
                "data": {"name": ds, "dir": args.data_dir},
                "local": {"epochs": epochs, "batch_size": bs},
                "defense": {"client": "wbc"},
                "attack": {"prob": 0.0},
            }
        )
        exp = Experiment.prepare(cfg)
        f_img = forward_flops(exp)
        train_rate = best_throughput(exp, train=True)
        eval_rate = best_throughput(exp, train=False)
        w = exp.initial_weights()
        engines = {"sequential": sequential.train_round, "batched": batched.train_round}
        times: dict[str, list[float]] = {k: [] for k in engines}
        images = 0
        for t in range(1, args.rounds + 2):
            plan = exp.round_plan(t)
            images = sum(len(exp.client_indices[c]) for c in plan.clients) * epochs
            for name, fn in engines.items():
                tick = time.perf_counter()
                out = fn(exp, plan, w)
                evaluate(
                    exp.model,
                    out.weights,
                    exp.dataset.test_x,
                    exp.dataset.test_y,
                    exp.dataset.normalize,
                    cfg.eval.batch_size,
                )
                if t > 1:  # the first round warms caches and allocators
                    times[name].append(time.perf_counter() - tick)
            w = out.weights
        n_test = len(exp.dataset.test_y)
        flops = 3 * f_img * images + f_img * n_test
        floor = images / train_rate + n_test / eval_rate
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        for name, ts in times.items():
            sec = statistics.median(ts)
            print(
                f"| {ds} | {epochs}/{bs} | {name} | {sec:.2f} | {images / sec:.0f} "
                f"| {flops / sec / 1e9:.0f} | {floor:.2f} | {sec / floor:.2f} | {rss:.0f} "
                f"| {train_rate:.0f} / {eval_rate:.0f} |"
            )


if __name__ == "__main__":
    main()

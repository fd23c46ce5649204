"""Where FL-WBC's per-step time goes in the batched engine, and what fusing it could save.

For G = 10 clients' flat parameters [G, P] of the paper's CNNs, it times (median of --reps
calls, interleaved):
- `sgd`: the momentum SGD step alone (`flwbc.client.local.sgd_step`);
- `sgd+wbc`: the SGD step followed by the engine's `WBCStep` (eq. 8-10);
- `rand`: only the uniform draws FL-WBC needs (one torch.Generator per client);
- `fused` (with --compile): the SGD step and FL-WBC's arithmetic as one torch.compile'd kernel,
  fed the same uniform draws. This is a prototype for the measurement only; the engines do not
  use it (compiling costs seconds per shape and needs a C++ compiler).

It prints milliseconds per step and the projected seconds per round at E=10/B=10 (steps per
client a round: 400 on CIFAR-10, 480 on Fashion-MNIST with the reference 80% training split;
500 and 600 with all data).

usage: python benchmarks/bench_wbc_step.py [--reps 50] [--compile] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import parse_with_allocator_flag

from flwbc.client.local import sgd_step
from flwbc.client.wbc import WBCOptions, WBCStep, laplace_scale
from flwbc.models import FlatModel, build_model

STEPS = {"fmnist_cnn": 600, "cifar_cnn": 500}


def fused_body(w, v, g, prev, u, lr: float, mom: float, b: float):  # type: ignore[no-untyped-def]
    v2 = v * mom + g
    step = v2 * (-lr)
    w_hat = w + step
    h = (step - prev).abs() / lr
    u = u * 2.0 + (2.0**-24 - 1.0)
    noise = torch.log1p(-u.abs()) * (-b) * torch.sign(u)
    mask = h <= noise.abs()
    return w_hat + noise * mask * lr, step, v2, mask.sum(1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = parse_with_allocator_flag(ap)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, G = 10 clients")
    print("| model | P | variant | ms/step | projected s/round (E=10/B=10) |")
    print("|---|---|---|---|---|")
    for name, (ch, size) in (("fmnist_cnn", (1, 28)), ("cifar_cnn", (3, 32))):
        bench_model(name, ch, size, args)


def bench_model(name: str, ch: int, size: int, args: argparse.Namespace) -> None:
    model = FlatModel(build_model(name, ch, size, 10))
    p = model.weight_mask.numel()
    g_, lr, mom = 10, 0.01, 0.5
    w = torch.randn(g_, p) * 0.1
    v = torch.zeros(g_, p)
    grad = torch.randn(g_, p) * 0.1
    gens = [torch.Generator().manual_seed(i) for i in range(g_)]
    wbc = WBCStep(WBCOptions(s=0.4), lr, model.weight_mask, gens)

    def sgd() -> None:
        sgd_step(w, v.clone(), grad, lr, mom)

    def sgd_wbc() -> None:
        w_hat, step = sgd_step(w, v.clone(), grad, lr, mom)
        wbc(w_hat, step, grad)

    def rand() -> None:
        torch.stack([torch.rand(p, generator=gen) for gen in gens])

    variants = {"sgd": sgd, "sgd+wbc": sgd_wbc, "rand": rand}
    if args.compile:
        compiled = torch.compile(fused_body, dynamic=False)
        prev = torch.randn(g_, p) * 0.01
        b = laplace_scale(0.4, "std")

        def fused() -> None:
            u = torch.stack([torch.rand(p, generator=gen) for gen in gens])
            compiled(w, v, grad, prev, u, lr, mom, b)

        t = time.perf_counter()
        fused()
        print(f"(compiling the fused kernel took {time.perf_counter() - t:.1f} s)")
        variants["fused"] = fused
    times: dict[str, list[float]] = {k: [] for k in variants}
    for f in variants.values():
        for _ in range(3):
            f()
    for _ in range(args.reps):
        for k, f in variants.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    for k, ts in times.items():
        ms = 1e3 * statistics.median(ts)
        per_round = [ms * STEPS[name] * f / 1e3 for f in (0.8, 1.0)]
        print(f"| {name} | {p} | {k} | {ms:.2f} | {per_round[0]:.2f} to {per_round[1]:.2f} |")


if __name__ == "__main__":
    main()

"""CUDA against CPU: equal results within float tolerance, and runs per hour on one GPU.

1. Equality. The same runs (paper settings: 100 clients, 10 a round, E = 10, B = 10, the
   paper's targeted attack in round 2) on the CPU and on CUDA with the batched engine, from
   the same initial model; printed per run: the largest absolute difference of the final
   weights, its ratio to the weights' largest entry, and the test accuracy of every round on
   both devices. Rules and attacks whose random draws are made on the device (FL-WBC's and
   local DP's noise, DnC's and SignGuard's coordinate samples, bucketing) draw other numbers
   on CUDA than on the CPU, by design (drawing on the device avoids a copy per step), so the
   FL-WBC run is compared statistically only: same schedule, its accuracy per round beside
   the CPU's.
2. Throughput. `--pack K` runs at once on the one GPU (K processes, `flwbc run --device
   cuda`), FL-WBC s = 0.4 at the paper's settings; each run's median seconds per round from
   its `timings.jsonl` (so process start and CUDA initialisation do not count), and the GPU's
   rounds per hour, K / median. Runs per hour assume the paper reproduction's mean run length
   (9,984 rounds in 549 runs: 18.2 rounds).

Writes everything to --out/gpu.json as well as printing it. `--synthetic-cifar` writes random
images in CIFAR-10's official layout into --data-dir when it has none (a machine the real
files cannot be copied to); the timings are those of real data, the equality check is as valid,
and gpu.json says so.

usage: python benchmarks/bench_gpu.py --data-dir DIR [--rounds 2] [--pack 1,8]
       [--datasets fmnist,cifar10] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import flwbc

MEAN_RUN_ROUNDS = 9984 / 549


def base_config(dataset: str, data_dir: str, device: str, rounds: int, **over: object) -> dict:
    cfg: dict = {
        "seed": 0,
        "data": {"name": dataset, "partition": "iid", "dir": data_dir},
        "federation": {"rounds": rounds},
        "attack": {"num_malicious": 5, "mode": "real", "epochs": 10, "rounds": [rounds]},
        "engine": "batched",
        "device": device,
        "threads": os.cpu_count() or 1,
    }
    for dotted, value in over.items():
        node = cfg
        *path, last = dotted.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


def equality(dataset: str, data_dir: str, rounds: int, label: str, **over: object) -> dict:
    out: dict = {"dataset": dataset, "run": label}
    weights = {}
    for device in ("cpu", "cuda"):
        t = time.perf_counter()
        res = flwbc.run(
            flwbc.make_config(base_config(dataset, data_dir, device, rounds, **over)),
            progress=False,
        )
        out[f"{device}_seconds"] = round(time.perf_counter() - t, 2)
        out[f"{device}_test_acc"] = [r["test_acc"] for r in res.records]
        out[f"{device}_target_conf"] = [r.get("target_conf") for r in res.records]
        weights[device] = res.weights.detach().double().cpu()
    diff = (weights["cpu"] - weights["cuda"]).abs().max().item()
    out["max_abs_diff"] = diff
    out["max_abs_diff_rel"] = diff / weights["cpu"].abs().max().item()
    print(json.dumps(out), flush=True)
    return out


def throughput(dataset: str, data_dir: str, rounds: int, pack: int, work: Path) -> dict:
    procs = []
    names = [f"{dataset}-pack{pack}-{i}" for i in range(pack)]
    threads = max(1, (os.cpu_count() or 1) // pack)
    for i, name in enumerate(names):
        cmd = [
            sys.executable, "-m", "flwbc.cli", "run",
            "--dataset", dataset, "--data-dir", data_dir, "--rounds", str(rounds),
            "--client-defense", "wbc", "--wbc-s", "0.4", "--device", "cuda",
            "--threads", str(threads), "--seed", str(i), "--out", str(work), "--name", name,
            "--no-progress",
        ]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    outcomes = [(p.communicate()[1], p.returncode) for p in procs]
    errors = [err.decode()[-400:] for err, rc in outcomes if rc != 0]
    if errors:
        print(f"pack {pack}: a run failed: {errors[0]}", file=sys.stderr)
        return {"dataset": dataset, "pack": pack, "error": errors[0]}
    medians = []
    for name in names:
        lines = (work / name / "timings.jsonl").read_text().splitlines()
        secs = [json.loads(ln)["seconds"] for ln in lines]
        medians.append(statistics.median(secs[1:] if len(secs) > 1 else secs))
    per_round = statistics.median(medians)
    rounds_per_hour = pack * 3600 / per_round
    out = {
        "dataset": dataset,
        "pack": pack,
        "median_seconds_per_round": round(per_round, 3),
        "rounds_per_hour": round(rounds_per_hour),
        "runs_per_hour": round(rounds_per_hour / MEAN_RUN_ROUNDS, 1),
    }
    print(json.dumps(out), flush=True)
    return out


def write_synthetic_cifar(data_dir: Path) -> bool:
    """Random uint8 images and labels in CIFAR-10's python layout (5 train batches of 10,000,
    one test batch), unless the folder exists; True when written."""
    folder = data_dir / "cifar-10" / "cifar-10-batches-py"
    if folder.is_dir():
        return False
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            b"data": rng.integers(0, 256, (10000, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, 10000).tolist(),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("FLWBC_DATA_DIR", "data"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--throughput-rounds", type=int, default=4)
    ap.add_argument("--pack", default="1,8")
    ap.add_argument("--datasets", default="fmnist,cifar10")
    ap.add_argument("--skip-equality", action="store_true")
    ap.add_argument("--out", default=".")
    ap.add_argument("--synthetic-cifar", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("error: no CUDA device", file=sys.stderr)
        return 2
    result: dict = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "flwbc": flwbc.__version__,
        "cpus": os.cpu_count(),
        "equality": [],
        "throughput": [],
    }
    if args.synthetic_cifar:
        result["synthetic_cifar"] = write_synthetic_cifar(Path(args.data_dir))
    datasets = args.datasets.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        (out / "gpu.json").write_text(json.dumps(result, indent=1))

    if not args.skip_equality:
        for i, ds in enumerate(datasets):
            result["equality"].append(equality(ds, args.data_dir, args.rounds, "fedavg"))
            save()
            if i == 0:
                median = {"server.aggregator": "median"}
                result["equality"].append(
                    equality(ds, args.data_dir, args.rounds, "median", **median)
                )
                save()
        result["equality"].append(
            equality(
                datasets[0],
                args.data_dir,
                args.rounds,
                "fl-wbc",
                **{"defense.client": "wbc", "defense.options.wbc.s": 0.4},
            )  # fmt: skip
        )
        save()
    with tempfile.TemporaryDirectory() as work:
        for ds in datasets:
            for k in (int(x) for x in args.pack.split(",")):
                result["throughput"].append(
                    throughput(ds, args.data_dir, args.throughput_rounds, k, Path(work))
                )
                save()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run an experiment on a real Flower deployment on this machine: a SuperLink and one SuperNode
per client, with TLS and SuperNode authentication, each SuperNode holding only its own data.

It does what docs/flower-deployment.md describes by hand: exports the partitions, writes the
Flower app, starts everything (examples/flower_deploy.py), runs the experiment with
`flwr run`, and stops every process. The run directory is the usual one (rounds.jsonl, ...).

usage: python examples/flower_local_deployment.py [--config CFG] [--out DIR] [--work DIR]
Default experiment: 3 clients (2 a round, one attacker in round 3), 4 rounds of FL-WBC on a
tenth of Fashion-MNIST; 93 s here with two other jobs running.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flower_deploy import LocalDeployment  # examples/flower_deploy.py, beside this script

import flwbc
from flwbc.config import load_config_file
from flwbc.errors import FlwbcError
from flwbc.flower.appdir import write_app
from flwbc.flower.partitions import export_partitions

DEFAULT = {
    "data": {"train_fraction": 0.1},
    "federation": {"num_clients": 3, "clients_per_round": 2, "rounds": 4},
    "local": {"epochs": 1, "batch_size": 32},
    "attack": {"num_malicious": 1, "rounds": [3]},
    "defense": {"client": "wbc"},
    "output": {"name": "deployed"},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="experiment YAML/JSON (default: a small FL-WBC run)")
    ap.add_argument("--out", default="runs/flower-deployment", help="where the run dir goes")
    ap.add_argument("--work", default="runs/flower-deployment-work", help="certs, keys, logs")
    ap.add_argument("--timeout", type=float, default=3600.0)
    args = ap.parse_args()
    try:
        cfg = flwbc.make_config(load_config_file(args.config) if args.config else DEFAULT)
        work, out = Path(args.work).resolve(), Path(args.out).resolve()
        work.mkdir(parents=True, exist_ok=True)
        cfg_file = work / "experiment.json"
        cfg_file.write_text(json.dumps(cfg.to_dict()))
        parts = export_partitions(cfg, work / "partitions")
        app = write_app(work / "app").parent
        nodes = [{"partition-id": c, "partition-file": str(p)} for c, p in enumerate(parts)]
        with LocalDeployment(work / "deployment", len(nodes), nodes) as dep:
            print(f"SuperLink on {dep.superlink_address} (TLS, node auth); {len(nodes)} SuperNodes")
            result = dep.run(app, {"config": str(cfg_file), "out": str(out)}, args.timeout)
        if not result.ok:
            print(f"run {result.status}: see {result.logs['run']}", file=sys.stderr)
            return 1
    except FlwbcError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    name = cfg.output.name or "?"
    print(f"run directory: {out / name} ({result.elapsed_s:.0f} s); flwbc summary {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

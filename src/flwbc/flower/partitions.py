"""One file per client for real deployments: each SuperNode holds only its own data.

`export_partitions(cfg, out)` writes `client-<c>.safetensors` with client c's images and labels
(in the experiment's order, so its data order equals the simulation's), and for an attacker also
D_M with its target labels. A SuperNode started with `--node-config "partition-id=c
partition-file=.../client-<c>.safetensors"` trains from that file alone. The file records a key
of the config fields that decide its contents; a node refuses a file made for another config.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from flwbc.attacks import build_attack
from flwbc.config import ExperimentConfig
from flwbc.data import Dataset
from flwbc.defenses import build_client_defenses
from flwbc.errors import FlwbcError
from flwbc.experiment import Experiment
from flwbc.models import FlatModel, build_model
from flwbc.postagg import build_post_aggregators
from flwbc.preagg import build_pre_aggregators
from flwbc.runio import atomic_write_bytes
from flwbc.server import build_aggregator

FORMAT = "flwbc-partition-1"


def partition_key(cfg: ExperimentConfig) -> str:
    """Hash of the config fields a partition file's contents depend on."""
    att = cfg.attack
    fields = {
        "seed": cfg.seed,
        "data": {k: v for k, v in cfg.data.model_dump(mode="json").items() if k != "dir"},
        "num_clients": cfg.federation.num_clients,
        "attack": [att.enabled, att.num_malicious, att.num_images, att.source, att.target],
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def export_partitions(cfg: ExperimentConfig, out: str | Path) -> list[Path]:
    """Write every client's partition file under `out` (atomically); return their paths."""
    exp = Experiment.prepare(cfg)
    ds = exp.dataset
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "key": partition_key(cfg),
        "dataset": ds.name,
        "num_classes": str(ds.num_classes),
        "mean": json.dumps(ds.mean),
        "std": json.dumps(ds.std),
        "num_clients": str(cfg.federation.num_clients),
        "malicious_ids": json.dumps(exp.malicious_ids),
    }
    paths = []
    for c, idx in enumerate(exp.client_indices):
        rows = torch.from_numpy(idx)
        tensors = {"x": ds.train_x[rows].contiguous(), "y": ds.train_y[rows]}
        if c in exp.malicious_ids and exp.x_mal is not None and exp.y_mal is not None:
            tensors["x_mal"] = exp.x_mal.detach().cpu().float().contiguous()
            tensors["y_mal"] = exp.y_mal.detach().cpu().contiguous()
        path = out / f"client-{c}.safetensors"
        atomic_write_bytes(path, save(tensors, metadata={**meta, "client": str(c)}))
        paths.append(path)
    return paths


def partition_experiment(
    cfg: ExperimentConfig, path: str | Path, client: int | None = None
) -> Experiment:
    """Client-side experiment built from one partition file: the client's own images as the
    whole training set, D_M if it is an attacker, no test set (the server evaluates). With
    `client`, the file must be that client's."""
    p = Path(path)
    if not p.is_file():
        raise FlwbcError(f"partition file not found: {p}")
    try:
        with safe_open(p, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise FlwbcError(f"cannot read partition file {p}: {err}") from None
    if meta.get("format") != FORMAT:
        raise FlwbcError(f"{p} is not a flwbc partition file")
    if meta["key"] != partition_key(cfg):
        raise FlwbcError(
            f"{p} was exported for another experiment (seed, data, clients or attack differ); "
            "export the partitions again with 'flwbc flower partitions'"
        )
    c = int(meta["client"])
    if client is not None and client != c:
        raise FlwbcError(f"{p} holds client {c}'s data, but this node plays client {client}")
    n = int(meta["num_clients"])
    x, y = tensors["x"], tensors["y"]
    empty_x = torch.empty((0, *x.shape[1:]), dtype=x.dtype)
    ds = Dataset(
        meta["dataset"],
        x,
        y,
        empty_x,
        torch.empty(0, dtype=y.dtype),
        int(meta["num_classes"]),
        tuple(json.loads(meta["mean"])),
        tuple(json.loads(meta["std"])),
    )
    device, dtype = torch.device(cfg.device), getattr(torch, cfg.dtype)
    ch, h, _ = ds.image_shape
    model = FlatModel(
        build_model(cfg.model_name, ch, h, ds.num_classes, cfg.model_options).to(dtype)
    ).to(device)
    indices = [np.empty(0, dtype=np.int64)] * n
    indices[c] = np.arange(len(y), dtype=np.int64)
    mal_ids = json.loads(meta["malicious_ids"])
    x_mal = tensors["x_mal"].to(device, dtype) if "x_mal" in tensors else None
    y_mal = tensors["y_mal"].to(device) if "y_mal" in tensors else None
    return Experiment(
        cfg=cfg,
        dataset=ds,
        model=model,
        client_indices=indices,
        malicious_ids=mal_ids,
        benign_ids=np.setdiff1d(np.arange(n), mal_ids),
        malicious_set=None,
        x_mal=x_mal,
        y_mal=y_mal,
        aggregator=build_aggregator(cfg.server.aggregator, cfg.server.options),
        device=device,
        attack=build_attack(cfg),
        defenses=build_client_defenses(cfg),
        pre_steps=build_pre_aggregators(cfg.server.pre),
        post_steps=build_post_aggregators(cfg.server.post),
    )

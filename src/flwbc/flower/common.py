"""What travels between the ServerApp and the ClientApps, and the client side's experiments.

A train message carries the global model as one flat vector (`ArrayRecord` key "vector") and a
`ConfigRecord` with the round, the client id the server planned for that node, and the whole
experiment config as JSON, so a node needs no configuration besides its own data.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from torch import Tensor

from flwbc.config import ExperimentConfig, make_config
from flwbc.errors import FlwbcError
from flwbc.experiment import Experiment

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
STAT = "stat."
"""Prefix of the metrics that carry a client's defense stats (e.g. `stat.wbc_perturbed`)."""
VECTOR = "vector"
ROUND = "server-round"
CLIENT = "client"
EXPERIMENT = "flwbc-config"
PARTITION_ID = "partition-id"
PARTITION_FILE = "partition-file"
DATA_DIR = "data-dir"


def pack(vector: Tensor) -> ArrayRecord:
    """A flat parameter vector as an ArrayRecord (serialised by numpy, never pickled)."""
    return ArrayRecord({VECTOR: vector.detach().cpu().contiguous()})


def unpack(record: ArrayRecord, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The flat vector of `pack`, on `device` in `dtype`."""
    try:
        vec = record.to_torch_state_dict()[VECTOR]
    except KeyError:
        raise FlwbcError(f"message without the '{VECTOR}' array") from None
    return vec.to(device, dtype)


def config_json(cfg: ExperimentConfig) -> str:
    return json.dumps(cfg.to_dict(), sort_keys=True)


def train_content(vector: ArrayRecord, t: int, c: int, cfg_json: str) -> RecordDict:
    """The payload of client c's round-t train message."""
    return RecordDict(
        {ARRAYS: vector, CONFIG: ConfigRecord({ROUND: t, CLIENT: c, EXPERIMENT: cfg_json})}
    )


def read_train_config(msg: Message) -> tuple[int, int, str]:
    """(round, client id, experiment config JSON) of a train message."""
    rec = msg.content[CONFIG]
    return int(rec[ROUND]), int(rec[CLIENT]), str(rec[EXPERIMENT])


def error_reason(msg: Message) -> str:
    """The last line of an error reply's reason (Flower puts the whole traceback there)."""
    lines = [ln for ln in (msg.error.reason or "").strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else f"error code {msg.error.code}"


def partition_id(context: Context) -> int:
    """The client id this node plays: its node config's `partition-id` (Flower's simulation
    sets it; a SuperNode gets it with `--node-config "partition-id=3"`)."""
    try:
        return int(context.node_config[PARTITION_ID])
    except KeyError:
        raise FlwbcError(
            f"this SuperNode has no '{PARTITION_ID}' in its node config; start it with "
            f'--node-config "{PARTITION_ID}=<client id>"'
        ) from None


def node_experiment(cfg_json: str, node_config: dict[str, Any]) -> Experiment:
    """The experiment a node trains in: from its own partition file when its node config names
    one, otherwise from the whole dataset (under `data-dir`, or the config's data.dir)."""
    part = node_config.get(PARTITION_FILE)
    data_dir = node_config.get(DATA_DIR)
    if part:
        pid = int(node_config.get(PARTITION_ID, -1))
        return _experiment(cfg_json, str(part), None, pid)
    return _experiment(cfg_json, None, str(data_dir) if data_dir else None, None)


@lru_cache(maxsize=2)
def _experiment(
    cfg_json: str, partition_file: str | None, data_dir: str | None, client: int | None
) -> Experiment:
    # `threads` is the server's; a ClientApp keeps the threads its runtime gives it (Ray: its
    # `flower.num_cpus`), since several ClientApps share the machine's cores
    cfg = make_config(json.loads(cfg_json))
    if partition_file is not None:
        from flwbc.flower.partitions import partition_experiment

        return partition_experiment(cfg, partition_file, client)
    if data_dir is not None:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"dir": data_dir})})
    return Experiment.prepare(cfg)

"""The ClientApp: each node is one client of the experiment, chosen by its partition id.

Its train function is the project's client update (`engine.sequential.client_update`): benign
training, FL-WBC's perturbation, an attacker's eq. 3, with the same random streams as the native
engines, so a Flower run matches a native run of the same config.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flwbc.defenses.ldp import LocalDP
from flwbc.errors import FlwbcError
from flwbc.flower.common import (
    ARRAYS,
    CONFIG,
    EXPERIMENT,
    METRICS,
    PARTITION_ID,
    STAT,
    node_experiment,
    pack,
    partition_id,
    read_train_config,
    unpack,
)
from flwbc.flower.mods import ldp_mod
from flwbc.round import client_update
from flwbc.runtime import tune_allocator

app = ClientApp(mods=[ldp_mod])


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server which client id this node plays, after checking (and loading) the data
    it would train on: a wrong or stale partition file fails here, before the first round."""
    pid = partition_id(context)
    cfg_json = msg.content[CONFIG].get(EXPERIMENT)
    if cfg_json:
        node_experiment(str(cfg_json), dict(context.node_config))
    return Message(RecordDict({CONFIG: ConfigRecord({PARTITION_ID: pid})}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Client c's round-t update from the global model in the message (eq. 3 for attackers,
    eq. 8-10 under FL-WBC); local DP is left to `ldp_mod` when the config says `flower.ldp:
    mod`."""
    tune_allocator()
    t, c, cfg_json = read_train_config(msg)
    pid = partition_id(context)
    if c != pid:
        raise FlwbcError(f"the server sent client {c}'s work to the node of client {pid}")
    exp = node_experiment(cfg_json, dict(context.node_config))
    w = unpack(msg.content[ARRAYS], exp.device, exp.dtype)
    n = len(exp.client_indices[c])
    skip = (LocalDP,) if exp.cfg.flower.ldp == "mod" else ()
    update, loss, stats = client_update(exp, t, c, c in exp.malicious_ids, w, skip=skip)
    metrics: dict[str, float | int] = {"num-examples": n, "train-loss": loss}
    metrics.update({STAT + k: v for k, v in stats.items()})
    return Message(RecordDict({ARRAYS: pack(update), METRICS: MetricRecord(metrics)}), reply_to=msg)

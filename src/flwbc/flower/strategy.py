"""The ServerApp strategy: Flower's FedAvg with the project's round plan and aggregators.

Sampling is the experiment's own seeded `round_plan` (exactly K clients a round, the attackers in
adversarial rounds), not Flower's unseeded sampler, and `aggregate_train` hands the updates to
the experiment's aggregator (FedAvg, median, trimmed mean, Krum, ..., central DP) through the
same `aggregate_round` the native engines use. Each round is recorded in the run directory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from flwbc.context import RoundPlan
from flwbc.errors import FlwbcError
from flwbc.flower.common import (
    ARRAYS,
    CONFIG,
    EXPERIMENT,
    METRICS,
    PARTITION_ID,
    STAT,
    config_json,
    error_reason,
    pack,
    train_content,
    unpack,
)
from flwbc.round import aggregate_round

if TYPE_CHECKING:
    from flwbc.api import RunSession

RoundHook = Callable[[dict[str, Any]], bool]


class StopRun(Exception):
    """Stops a run between rounds (the round hook asked, or the runtime ended); the run
    directory stays resumable."""


class FlwbcStrategy(FedAvg):
    """FedAvg whose sampling and aggregation are the experiment's (see the module docstring)."""

    def __init__(self, session: RunSession, on_round: RoundHook | None = None) -> None:
        k = session.cfg.federation.clients_per_round
        super().__init__(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=k,
            min_available_nodes=k,
        )
        self.session = session
        self.on_round = on_round
        self.offset = session.next_round - 1
        self.cfg_json = config_json(session.cfg)
        self.nodes: dict[int, int] = {}
        self._round: tuple[RoundPlan, float] | None = None

    def connect(self, grid: Grid, wait: float) -> None:
        """Map client ids to node ids by asking every node its partition id, waiting up to
        `wait` seconds for the experiment's N clients to be connected."""
        n = self.session.cfg.federation.num_clients
        deadline = time.monotonic() + wait
        while True:
            fresh = [nid for nid in grid.get_node_ids() if nid not in self.nodes.values()]
            if fresh:
                # the config lets a node check its data (and load it) before the first round
                query = RecordDict({CONFIG: ConfigRecord({EXPERIMENT: self.cfg_json})})
                msgs = [Message(query, nid, MessageType.QUERY) for nid in fresh]
                for reply in grid.send_and_receive(
                    msgs, timeout=max(deadline - time.monotonic(), 1)
                ):
                    if reply.has_error():
                        raise FlwbcError(
                            f"node {reply.metadata.src_node_id} cannot take part: "
                            f"{error_reason(reply)}"
                        )
                    c = int(reply.content[CONFIG][PARTITION_ID])
                    if not 0 <= c < n:
                        raise FlwbcError(f"a node plays client {c}, outside 0..{n - 1}")
                    if c in self.nodes:
                        raise FlwbcError(f"two nodes play client {c}")
                    self.nodes[c] = reply.metadata.src_node_id
            if len(self.nodes) == n:
                return
            if time.monotonic() > deadline:
                missing = sorted(set(range(n)) - set(self.nodes))
                raise FlwbcError(
                    f"{len(self.nodes)} of {n} clients connected within {wait:.0f} s; "
                    f"missing client ids {missing[:10]}{' ...' if len(missing) > 10 else ''}"
                )
            time.sleep(0.5)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send the global model to exactly the clients of the experiment's round plan.

        `arrays` is the packed global model (`serve`'s initial one, then `aggregate_train`'s),
        so it is serialised once a round."""
        t = self.offset + server_round
        plan = self.session.exp.round_plan(t)
        self._round = (plan, time.perf_counter())
        return [
            Message(train_content(arrays, t, c, self.cfg_json), self.nodes[c], MessageType.TRAIN)
            for c in plan.clients
        ]

    def _update(self, content: RecordDict, c: int, t: int) -> torch.Tensor:
        """Client c's update from its reply, checked against the model it should fit."""
        exp = self.session.exp
        if ARRAYS not in content or METRICS not in content:
            raise FlwbcError(f"round {t}: client {c}'s reply lacks '{ARRAYS}' or '{METRICS}'")
        if "train-loss" not in content[METRICS]:
            raise FlwbcError(f"round {t}: client {c}'s reply lacks its 'train-loss'")
        vec = unpack(content[ARRAYS], exp.device, exp.dtype)
        if vec.shape != self.session.w.shape:
            raise FlwbcError(
                f"round {t}: client {c} sent {tuple(vec.shape)} values, expected "
                f"{tuple(self.session.w.shape)} (another model or flwbc version on that node?)"
            )
        return vec

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the updates with the experiment's aggregator and record the round."""
        assert self._round is not None
        plan, tick = self._round
        # attackers and benign clients report different metrics (defenses' stats), so Flower's
        # same-keys check does not apply; `_update` checks each reply
        valid, errors = self._check_and_log_replies(replies, is_train=True, validate=False)
        client_of = {nid: c for c, nid in self.nodes.items()}
        if errors:
            bad = errors[0]
            raise FlwbcError(
                f"round {plan.round}: client {client_of.get(bad.metadata.src_node_id)} failed: "
                f"{error_reason(bad)}"
            )
        by_client = {client_of[m.metadata.src_node_id]: m.content for m in valid}
        if sorted(by_client) != sorted(plan.clients):
            raise FlwbcError(
                f"round {plan.round}: replies from clients {sorted(by_client)}, "
                f"expected {plan.clients}"
            )
        sess = self.session
        exp = sess.exp
        updates = torch.stack([self._update(by_client[c], c, plan.round) for c in plan.clients])
        metrics = [by_client[c][METRICS] for c in plan.clients]
        losses = [float(m["train-loss"]) for m in metrics]
        stats = [
            {k.removeprefix(STAT): float(v) for k, v in m.items() if k.startswith(STAT)}
            for m in metrics
        ]
        out = aggregate_round(exp, plan, sess.w, updates, sum(losses) / len(losses), stats)
        record = sess.record(plan, out, tick, time.perf_counter() - tick)
        if self.on_round is not None and not self.on_round(record):
            raise StopRun
        return pack(out.weights), MetricRecord({"train-loss": out.train_loss})

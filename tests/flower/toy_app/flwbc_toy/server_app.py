"""ServerApp: FedAvg over a single scalar for ``num-server-rounds`` rounds, result to JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run FedAvg without evaluation and write rounds, participants and the final weight."""
    num_rounds = int(context.run_config["num-server-rounds"])
    result_file = str(context.run_config["result-file"])
    participants: list[list[int]] = []

    def train_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
        ids = sorted(int(rec["metrics"]["partition-id"]) for rec in records)
        participants.append(ids)
        return aggregate_metricrecords(records, weight_key)

    strategy = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=2,
        min_available_nodes=2,
        train_metrics_aggr_fn=train_metrics,
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord([np.zeros(1, dtype=np.float64)]),
        num_rounds=num_rounds,
        train_config=ConfigRecord({"lr": 1.0}),
    )
    final = result.arrays.to_numpy_ndarrays()[0]
    payload = {
        "num_rounds": num_rounds,
        "participants": participants,
        "final_weight": float(final[0]),
        "node_ids": sorted(int(n) for n in grid.get_node_ids()),
    }
    if result_file:
        path = Path(result_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2))

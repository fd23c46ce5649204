"""ClientApp: adds the node's partition offset to the global weight.

Each SuperNode is started with ``--node-config 'partition-id=<i> num-partitions=<n>
partition-file="<path>"'``; the partition file holds one number ``v_i``. ``train`` returns
``w + v_i`` (one example, so FedAvg takes the plain mean) and reports its partition id and
value, so the ServerApp can tell which nodes took part.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Return ``w + v`` where ``v`` is read from this node's partition file."""
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    value = float(Path(str(context.node_config["partition-file"])).read_text().strip())
    weights = msg.content["arrays"].to_numpy_ndarrays()[0]
    updated = np.asarray(weights + value, dtype=np.float64)
    content = RecordDict(
        {
            "arrays": ArrayRecord([updated]),
            "metrics": MetricRecord(
                {
                    "num-examples": 1,
                    "partition-id": partition_id,
                    "num-partitions": num_partitions,
                    "value": value,
                }
            ),
        }
    )
    return Message(content=content, reply_to=msg)

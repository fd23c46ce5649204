"""Split a pool of training indices among clients: IID, label shards, Dirichlet label skew, or
a registered partition. Each built-in partition is one module here, registering itself; this
package imports every one of them."""

from flwbc.data.partition.base import PARTITIONS, Partitioner, partition, register_partition
from flwbc.data.partition.dirichlet import partition_dirichlet
from flwbc.data.partition.iid import partition_iid
from flwbc.data.partition.shards import partition_shards
from flwbc.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = [
    "PARTITIONS",
    "Partitioner",
    "partition",
    "partition_dirichlet",
    "partition_iid",
    "partition_shards",
    "register_partition",
]

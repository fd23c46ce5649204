"""`iid`: equal shares drawn uniformly at random."""

from __future__ import annotations

import numpy as np

from flwbc.data.partition.base import as_pool, check_clients, register_partition
from flwbc.errors import FlwbcError


def partition_iid(pool: np.ndarray, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Split the pool uniformly at random into equal disjoint parts (the remainder is unused)."""
    pool = as_pool(pool)
    check_clients(num_clients)
    per = len(pool) // num_clients
    if per == 0:
        raise FlwbcError(
            f"cannot give {num_clients} clients data from a pool of {len(pool)}: use fewer clients"
        )
    perm = rng.permutation(pool)
    return [perm[i * per : (i + 1) * per].copy() for i in range(num_clients)]


register_partition("iid", "uniformly at random, equal sizes")(
    lambda pool, labels, num_clients, rng: partition_iid(pool, num_clients, rng)
)

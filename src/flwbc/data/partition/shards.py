"""`shards`: the label shards of McMahan et al. (AISTATS 2017)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from flwbc.data.partition.base import (
    as_pool,
    check_clients,
    pool_labels,
    register_partition,
    shuffled,
)
from flwbc.errors import FlwbcError


def partition_shards(
    pool: np.ndarray,
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    num_shards: Annotated[
        int, Field(ge=1, description="shards the label-sorted pool is cut into")
    ] = 200,
    shards_per_client: Annotated[int, Field(ge=1, description="shards dealt to each client")] = 2,
) -> list[np.ndarray]:
    """Non-IID split of McMahan et al.: sort by label, cut into shards, deal shards at random."""
    pool = as_pool(pool)
    check_clients(num_clients)
    if shards_per_client < 1 or num_shards < num_clients * shards_per_client:
        raise FlwbcError(
            f"{num_clients} clients x {shards_per_client} shards each need at least "
            f"{num_clients * shards_per_client} shards, got num_shards={num_shards}: "
            "raise num_shards or lower shards_per_client"
        )
    shard_size = len(pool) // num_shards
    if shard_size == 0:
        raise FlwbcError(
            f"a pool of {len(pool)} cannot be cut into {num_shards} shards: lower num_shards"
        )
    ordered = pool[np.argsort(pool_labels(pool, labels), kind="stable")]
    shards = ordered[: shard_size * num_shards].reshape(num_shards, shard_size)
    picks = rng.permutation(num_shards)[: num_clients * shards_per_client]
    picks = picks.reshape(num_clients, shards_per_client)
    return shuffled([shards[p].reshape(-1) for p in picks], rng)


register_partition("shards", "label shards (McMahan et al. 2017): num_shards, shards_per_client")(
    partition_shards
)

"""Keyed random streams: one experiment seed determines everything.

Every random choice draws from a stream keyed by (seed, purpose, round, client, ...), never from
a shared sequential generator. The draws of a client in a round therefore do not depend on the
order clients are trained in, on how many rounds came before (a resumed run continues
bit-identically), or on which defense runs (data order and noise have separate purposes), so two
runs that differ only in the defense see the same clients and the same batches.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def _key_int(part: int | str) -> int:
    if isinstance(part, str):
        return zlib.crc32(part.encode())
    if part < 0:
        raise ValueError(f"stream keys must be non-negative, got {part}")
    return int(part)


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed for the stream named by `keys` under the experiment `seed`."""
    seq = np.random.SeedSequence(entropy=seed, spawn_key=tuple(_key_int(k) for k in keys))
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def numpy_rng(seed: int, *keys: int | str) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *keys))


def torch_generator(
    seed: int, *keys: int | str, device: str | torch.device = "cpu"
) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *keys))
    return gen

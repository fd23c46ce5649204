"""Composable update transforms: norm clipping and noise, with explicit random state.

Used by norm bounding, central DP (server side) and local DP (client side), so that every rule
clips and perturbs the same way. Each acts on a `[..., P]` tensor of updates, row by row.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

NoiseKind = Literal["laplace", "gaussian"]


def clip_by_norm(updates: Tensor, bound: float) -> tuple[Tensor, Tensor]:
    """Scale each row to L2 norm at most `bound`; return the clipped rows and which were clipped."""
    norms = updates.norm(dim=-1, keepdim=True)
    factor = torch.clamp(bound / norms.clamp_min(1e-12), max=1.0)
    return updates * factor, (norms.squeeze(-1) > bound)


def noise(
    shape: tuple[int, ...],
    kind: NoiseKind,
    std: float,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Zero-mean i.i.d. noise with standard deviation `std`.

    Laplace noise with std σ has scale b = σ/√2 (the paper states DP noise by its std σ_dp).
    """
    if std == 0.0:
        return torch.zeros(shape, device=device, dtype=dtype)
    if kind == "gaussian":
        return torch.randn(shape, generator=generator, device=device, dtype=dtype).mul_(std)
    if kind == "laplace":
        from flwbc.client.wbc import laplace_noise

        return laplace_noise(shape, std / math.sqrt(2.0), generator, device).to(dtype)
    raise ValueError(f"unknown noise kind '{kind}'")

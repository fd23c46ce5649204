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


def to_symmetric_(u: Tensor) -> Tensor:
    """Map torch.rand's k·2⁻²⁴ in place to (2k + 1)·2⁻²⁴ − 1: exact in float32, strictly
    inside (−1, 1) and exactly symmetric about 0."""
    return u.mul_(2.0).add_(2.0**-24 - 1.0)


def symmetric_uniform(
    shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str
) -> Tensor:
    """Uniform samples strictly inside (−1, 1), exactly symmetric about 0 (`to_symmetric_`)."""
    return to_symmetric_(torch.rand(shape, generator=generator, device=device))


def laplace_noise(
    shape: tuple[int, ...], scale: float, generator: torch.Generator, device: torch.device | str
) -> Tensor:
    """Laplace(0, scale) samples from a single uniform draw by inverse CDF: for u from
    `symmetric_uniform`, −scale·sign(u)·log(1 − |u|), never infinite."""
    u = symmetric_uniform(shape, generator, device)
    return torch.log1p(-u.abs()).mul_(-scale).mul_(torch.sign(u))


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
        return laplace_noise(shape, std / math.sqrt(2.0), generator, device).to(dtype)
    raise ValueError(f"unknown noise kind '{kind}'")

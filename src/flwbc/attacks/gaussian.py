"""Gaussian noise attack (as in Blanchard et al., "Machine learning with adversaries: Byzantine
tolerant gradient descent", NeurIPS 2017, and the Byzantine-robustness benchmarks after it):
each attacker sends i.i.d. N(mu, sigma²) coordinates instead of its update.

Assumes no knowledge of the benign updates. The noise comes from the stream
(seed, "attack-gaussian", t, attacker position).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from pydantic import Field
from torch import Tensor

from flwbc.attacks.base import register_attack
from flwbc.attacks.crafted import CraftedAttack, CraftedOptions
from flwbc.rng import torch_generator

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


class GaussianOptions(CraftedOptions):
    mu: float = Field(0.0, description="mean of every coordinate")
    sigma: float = Field(1.0, ge=0, description="standard deviation of every coordinate")


@register_attack("gaussian")
class Gaussian(CraftedAttack[GaussianOptions]):
    """Send N(mu, sigma²) noise."""

    Options = GaussianOptions

    def forge(
        self, exp: ExperimentContext, t: int, seen: Tensor, own: Tensor, *, n: int, f: int
    ) -> Tensor:
        rows = []
        for j in range(f):
            gen = torch_generator(self.cfg.seed, "attack-gaussian", t, j, device=own.device)
            noise = torch.randn(own.shape[1], generator=gen, device=own.device, dtype=own.dtype)
            rows.append(noise.mul_(self.options.sigma).add_(self.options.mu))
        return torch.stack(rows)

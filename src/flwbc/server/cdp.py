"""Central differential privacy as a defense (paper §7.1, after Naseri et al. 2022).

The server clips every client update to L2 norm `clip` (C), takes the FedAvg weighted mean and
adds i.i.d. zero-mean noise of standard deviation `sigma` (σ_dp) to each coordinate of it.
Laplace noise (the paper's choice) with std σ has scale b = σ/√2; `noise="gaussian"` draws
N(0, σ²). σ is an absolute std, as the paper states it, not a multiple of C.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from flwbc.plugin_options import StrictOptions
from flwbc.server.base import Aggregate, Aggregator, RoundContext, register_aggregator
from flwbc.transforms import clip_by_norm, noise


class CentralDPOptions(StrictOptions):
    clip: float = Field(
        5.0, gt=0, description="C: every client update is clipped to this L2 norm first"
    )
    sigma: float = Field(
        0.1,
        ge=0,
        description="σ_dp: noise std added to each coordinate of the mean (absolute, not a "
        "multiple of C)",
    )
    noise: Literal["laplace", "gaussian"] = Field(
        "laplace", description="laplace (the paper's; scale σ/√2) or gaussian"
    )


@register_aggregator("cdp")
class CentralDP(Aggregator):
    Options = CentralDPOptions

    def __init__(
        self,
        clip: float = 5.0,
        sigma: float = 0.1,
        noise: Literal["laplace", "gaussian"] = "laplace",
    ):
        if clip <= 0:
            raise ValueError(f"clip must be > 0, got {clip}")
        if sigma < 0:
            raise ValueError(f"sigma must be ≥ 0, got {sigma}")
        if noise not in ("laplace", "gaussian"):
            raise ValueError(f"noise must be 'laplace' or 'gaussian', got {noise!r}")
        self.clip, self.sigma, self.noise = clip, sigma, noise

    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        clipped, was_clipped = clip_by_norm(updates, self.clip)
        mean = weights.to(updates.dtype) @ clipped
        mean += noise(
            tuple(mean.shape), self.noise, self.sigma, ctx.generator, mean.device, mean.dtype
        )
        return Aggregate(mean, {"clipped": int(was_clipped.sum())})

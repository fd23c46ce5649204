"""Central differential privacy as a defense (paper §7.1, after Naseri et al. 2022).

The server clips every client update to L2 norm `clip` (C), takes the FedAvg weighted mean and
adds i.i.d. zero-mean noise of standard deviation `sigma` (σ_dp) to each coordinate of it.
Laplace noise (the paper's choice) with std σ has scale b = σ/√2; `noise="gaussian"` draws
N(0, σ²). σ is an absolute std, as the paper states it, not a multiple of C.

The rule is the `clip` pre-aggregation step, the FedAvg mean and the `noise` post-aggregation
step, applied here with the round's server stream; those steps put central DP behind any
other rule (`server: {aggregator: median, pre: [clip], post: [noise]}`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from flwbc.plugin_options import StrictOptions
from flwbc.postagg.noise import add_noise
from flwbc.server.base import Aggregate, Aggregator, RoundContext, register_aggregator
from flwbc.transforms import clip_by_norm


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

    def __init__(self, **options: object) -> None:
        self.options = CentralDPOptions(**options)  # type: ignore[arg-type]

    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        o = self.options
        clipped, was_clipped = clip_by_norm(updates, o.clip)
        mean = add_noise(weights.to(updates.dtype) @ clipped, o.noise, o.sigma, ctx.generator)
        return Aggregate(mean, {"clipped": int(was_clipped.sum())})

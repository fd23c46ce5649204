"""Noise added to the aggregate: zero-mean i.i.d. noise of standard deviation `sigma` on every
coordinate (`flwbc.transforms.noise`), Laplace (scale σ/√2) or Gaussian. Behind a rule and
after the `clip` pre-aggregation step, this is central differential privacy (the server clips
each update, aggregates and adds noise; paper §7.1 after Naseri et al. 2022, and the `cdp`
rule, which is this step behind the clipped FedAvg)."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from flwbc.context import RoundContext
from flwbc.plugin_options import StrictOptions
from flwbc.postagg.base import PostAggregator, register_post_aggregator
from flwbc.transforms import NoiseKind, noise


class NoiseOptions(StrictOptions):
    sigma: float = Field(
        ge=0,
        allow_inf_nan=False,
        description="the noise's std per coordinate (absolute, not a multiple of a clip bound)",
    )
    distribution: NoiseKind = Field(
        "laplace", description="laplace (scale σ/√2, the FL-WBC paper's central DP) or gaussian"
    )


def add_noise(
    update: Tensor, distribution: NoiseKind, sigma: float, generator: torch.Generator
) -> Tensor:
    """`update` plus zero-mean noise of std `sigma` drawn from `generator`."""
    return update + noise(
        tuple(update.shape), distribution, sigma, generator, update.device, update.dtype
    )


@register_post_aggregator("noise")
class Noise(PostAggregator[NoiseOptions]):
    """Add zero-mean noise of std `sigma` to every coordinate of the aggregate."""

    Options = NoiseOptions

    def apply(
        self, update: Tensor, ctx: RoundContext, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, Any]]:
        return add_noise(update, self.options.distribution, self.options.sigma, generator), {}

"""CRFL's smoothing of the global model (Xie, Chen, Chen & Li, ICML 2021; the `crfl` rule is
this step behind FedAvg): the new global model w' = w + u is clipped to L2 norm ρ_t, and
Gaussian noise of std σ is added to every parameter, w_new = w' · min(1, ρ_t/‖w'‖) + ε; the
step returns w_new − w. The bound grows with the 1-based round t,
ρ_t = min(rho, rho_slope·t + rho_start); defaults are the official code's EMNIST setting
(AI-secure/CRFL `configs/emnist_params.yaml`, `main.py`). Behind another rule it bounds the
model whatever that rule let through, as CRFL's certificate assumes."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from flwbc.context import RoundContext
from flwbc.plugin_options import PluginOptions
from flwbc.postagg.base import PostAggregator, register_post_aggregator
from flwbc.transforms import clip_by_norm, noise


class ModelClipOptions(PluginOptions):
    rho: float = Field(
        100.0,
        gt=0,
        allow_inf_nan=False,
        description="cap on the global model's norm bound (official EMNIST config; MNIST: 15)",
    )
    rho_slope: float = Field(
        0.25,
        ge=0,
        allow_inf_nan=False,
        description="growth of the bound per round (official EMNIST schedule; MNIST: 0.1)",
    )
    rho_start: float = Field(
        4.0,
        gt=0,
        allow_inf_nan=False,
        description="bound before round 1: ρ_t = min(rho, rho_slope·t + rho_start) "
        "(official EMNIST schedule; MNIST: 2)",
    )
    sigma: float = Field(
        0.01,
        ge=0,
        allow_inf_nan=False,
        description="std of the Gaussian noise added to every parameter (official configs)",
    )


@register_post_aggregator("model_clip")
class ModelClip(PostAggregator[ModelClipOptions]):
    """Clip the new global model's norm to ρ_t and add Gaussian noise to it (CRFL)."""

    Options = ModelClipOptions

    def clip_bound(self, round_: int) -> float:
        """ρ_t for the 1-based round t."""
        o = self.options
        return min(o.rho, o.rho_slope * round_ + o.rho_start)

    def apply(
        self, update: Tensor, ctx: RoundContext, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, Any]]:
        w = ctx.global_weights.to(update.dtype)
        model = w + update
        bound = self.clip_bound(ctx.round)
        clipped, was_clipped = clip_by_norm(model, bound)
        clipped = clipped + noise(
            tuple(clipped.shape), "gaussian", self.options.sigma, generator, clipped.device,
            clipped.dtype,
        )  # fmt: skip
        info = {"clip_bound": bound, "norm": float(model.norm()), "clipped": bool(was_clipped)}
        return clipped - w, info

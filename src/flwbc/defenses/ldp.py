"""Local differential privacy as a defense (paper §7.1, after Naseri et al., "Local and central
differential privacy for robustness and privacy in federated learning", NDSS 2022): each benign
client clips its update to L2 norm C and adds i.i.d. noise of std σ_dp to every coordinate.

Assumes nothing about the attackers. Options (`LDPOptions`): clip, sigma, noise. Noise comes
from the stream (seed, "ldp", t, c).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from flwbc.client.transform import ClientRun
from flwbc.defenses.base import ClientDefense, register_client_defense
from flwbc.plugin_options import PluginOptions
from flwbc.rng import torch_generator
from flwbc.transforms import clip_by_norm, noise


class LDPOptions(PluginOptions):
    """Local DP's options (`defense.options.ldp`): each benign client clips its update to L2
    norm `clip` and adds i.i.d. noise of std `sigma` to every coordinate before sending."""

    clip: float = Field(
        5.0, gt=0, description="C: 5 for Fashion-MNIST, 10 for CIFAR-10 in the paper"
    )
    sigma: float = Field(
        0.1, ge=0, json_schema_extra={"label": True}, description="σ_dp: noise std per coordinate"
    )
    noise: Literal["laplace", "gaussian"] = Field(
        "laplace", description="laplace (paper; scale σ/√2) or gaussian"
    )


@register_client_defense("ldp")
class LocalDP(ClientDefense[LDPOptions]):
    """Clip the finished update to norm C, then add noise of std σ_dp."""

    Options = LDPOptions

    def final(self, state: ClientRun, update: Tensor) -> Tensor:
        o, exp = self.options, state.exp
        update = clip_by_norm(update, o.clip)[0]
        update += noise(
            tuple(update.shape),
            o.noise,
            o.sigma,
            torch_generator(self.cfg.seed, "ldp", state.round, state.client, device=exp.device),
            exp.device,
        )
        return update

"""Local differential privacy as a defense (paper §7.1, after Naseri et al., "Local and central
differential privacy for robustness and privacy in federated learning", NDSS 2022): each benign
client clips its update to L2 norm C and adds i.i.d. noise of std σ_dp to every coordinate.

Assumes nothing about the attackers. Options: the `defense.ldp` section (clip, sigma, noise).
Noise comes from the stream (seed, "ldp", t, c).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from flwbc.defenses.base import ClientDefense, register_client_defense
from flwbc.rng import torch_generator
from flwbc.transforms import clip_by_norm, noise

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


@register_client_defense("ldp")
class LocalDP(ClientDefense[None]):
    """Clip the finished update to norm C, then add noise of std σ_dp."""

    def finish(self, exp: ExperimentContext, t: int, c: int, update: Tensor) -> Tensor:
        ldp = self.cfg.defense.ldp
        update = clip_by_norm(update, ldp.clip)[0]
        update += noise(
            tuple(update.shape),
            ldp.noise,
            ldp.sigma,
            torch_generator(self.cfg.seed, "ldp", t, c, device=exp.device),
            exp.device,
        )
        return update

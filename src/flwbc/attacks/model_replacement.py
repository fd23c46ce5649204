"""Model replacement (Bagdasaryan, Veit, Hua, Estrin & Shmatikov, "How to backdoor federated
learning", AISTATS 2020): the attacker trains a backdoored model X on its own data with a
share triggered and relabelled (the BadNets-style poisoning of `flwbc.attacks.backdoor`),
then sends its update scaled by γ = `scale`, so that FedAvg's G + (η/n) Σ (L_i − G) is
replaced by about X when the other updates nearly cancel (paper eq. 3: X̃ = γ(X − G) + G).

`scale`: "auto" is the paper's γ = n/η with n the clients per round and η the server lr,
which here is 1 (the server adds the aggregate of the updates as it is), so γ = clients per
round; or a number. With `federation.weighting: samples` the attacker's FedAvg weight is its
sample share rather than 1/n, and several attackers in one round each scale by γ: "auto" is
the paper's single-attacker, uniform-weight value.

`norm_bound` (the paper's constrain-and-scale, §4.2, bounded by a norm rather than its anomaly
loss): after every local SGD step the attacker's model is projected back onto the ball
‖w − G‖ ≤ norm_bound/γ (projected gradient descent), so the scaled update's L2 norm is at most
`norm_bound` (up to float rounding) and norm clipping at that bound leaves it unchanged.
Default: none (plain train-and-scale).

Not built: the paper's anomaly-detection loss term α·L_class + (1 − α)·L_ano of
constrain-and-scale (only its norm-bound form via PGD is), and its semantic backdoors (only
pixel triggers).

Assumed knowledge: the attacker's own data, the global model, the number of clients per round
and the server lr (for γ), and the norm bound if it evades clipping.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor

from flwbc.attacks.backdoor import BackdoorAttack, BackdoorOptions
from flwbc.attacks.base import register_attack
from flwbc.client.transform import ClientRun, SGDStep


class ModelReplacementOptions(BackdoorOptions):
    scale: float | Literal["auto"] = Field(
        "auto",
        description="γ: auto = clients per round / server lr 1 (the paper's n/η), or a number",
    )
    norm_bound: float | None = Field(
        None,
        gt=0,
        description="keep the scaled update's L2 norm within this bound by PGD (none: off)",
    )

    @field_validator("scale")
    @classmethod
    def _positive(cls, scale: float | str) -> float | str:
        if scale != "auto" and not float(scale) > 0:
            raise ValueError("scale must be > 0 or auto")
        return scale


def project_to_ball(w: Tensor, w0: Tensor, radius: float) -> Tensor:
    """w pulled back into the L2 ball of `radius` around w0 (w itself when inside it). The
    radius is a float32 tensor cast to w's dtype, divided by the norm as a tensor (one
    rounding), as the projection has always computed it."""
    d = w - w0
    norm = d.norm()
    r = torch.tensor(radius, device=w.device).to(w.dtype)
    if not bool(norm > r):
        return w
    return w0 + d * (r / norm.clamp_min(1e-30))


@register_attack("model_replacement")
class ModelReplacement(BackdoorAttack[ModelReplacementOptions]):
    """Train on backdoor data (optionally within a norm ball), then scale the update by γ."""

    Options = ModelReplacementOptions

    @property
    def mr(self) -> ModelReplacementOptions:
        return self.options

    def gamma(self) -> float:
        """γ: the `scale` option, "auto" being clients per round over the server lr 1."""
        s = self.mr.scale
        return float(self.cfg.federation.clients_per_round) / 1.0 if s == "auto" else float(s)

    def radius(self) -> float:
        """The ball the attacker's trained model stays in: norm_bound / γ (inf without one)."""
        b = self.mr.norm_bound
        return float("inf") if b is None else b / self.gamma()

    def after_step(self, state: ClientRun, s: SGDStep) -> Tensor:
        """Each step pulled back into the ball of `radius` around the global model (none
        without a norm bound)."""
        if self.mr.norm_bound is None:
            return s.w_hat
        return project_to_ball(s.w_hat, state.w0.detach(), self.radius())

    def final(self, state: ClientRun, update: Tensor) -> Tensor:
        return update * self.gamma()

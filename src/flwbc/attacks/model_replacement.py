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

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor

from flwbc.attacks.backdoor import BackdoorAttack, BackdoorOptions
from flwbc.attacks.base import register_attack
from flwbc.client.local import StepHook

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


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


class BallProjection:
    """After every step, each row's weights pulled back into the L2 ball of its radius around
    its starting weights (rows within it are left exactly as they are)."""

    def __init__(self, w0: Tensor, radius: Tensor) -> None:
        self.w0, self.radius = w0, radius.to(w0.dtype).view(-1, 1)

    def new_epoch(self) -> None:
        pass

    def __call__(self, w_hat: Tensor, step: Tensor, grad: Tensor) -> Tensor:
        d = w_hat - self.w0
        norm = d.norm(dim=1, keepdim=True)
        outside = norm > self.radius
        return torch.where(outside, self.w0 + d * (self.radius / norm.clamp_min(1e-30)), w_hat)


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

    def group_key(self, exp: ExperimentContext, n: int) -> Hashable:
        return (*super().group_key(exp, n), self.mr.norm_bound is not None)

    def step_hook(self, rows: Sequence[Any]) -> StepHook | None:
        if self.mr.norm_bound is None:
            return None
        w0 = torch.stack([r.w0.detach() for r in rows])
        radius = torch.tensor([r.exp.attack.radius() for r in rows], device=w0.device)
        return BallProjection(w0, radius)

    def finish(self, exp: ExperimentContext, t: int, c: int, update: Tensor) -> Tensor:
        return update * self.gamma()

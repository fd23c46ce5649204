"""Centered clipping (Karimireddy, He & Jaggi 2021, "Learning from history for Byzantine robust
optimization", eq. 2).

The centre v starts at the previous round's aggregate (zero in the first round); then `iters`
times

    v ← v + Σ_i w_i · clip(x_i - v, tau),    clip(y, tau) = y · min(1, tau / ||y||₂),

and v is the round's aggregate. The sum is weighted by the round's FedAvg weights w (normalised
to 1); with uniform weights it is the paper's (1/n) Σ_i. Clipping is
`flwbc.transforms.clip_by_norm`. Stateful: v is kept for the next round and saved by
`state_dict()` as {"v": v} (empty before the first round), so a resumed run continues
identically. `info["clipped"]` is how many x_i - v were clipped in the last iteration.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from torch import Tensor

from flwbc.errors import FlwbcError
from flwbc.plugin_options import StrictOptions
from flwbc.server.base import Aggregate, Aggregator, RoundContext, register_aggregator
from flwbc.transforms import clip_by_norm


class CenteredClipOptions(StrictOptions):
    tau: float = Field(
        1.0, gt=0, description="τ: the L2 norm each x_i − v is clipped to around the centre v"
    )
    iters: int = Field(1, ge=1, description="clipping iterations per round")


@register_aggregator("centered_clip")
class CenteredClip(Aggregator):
    Options = CenteredClipOptions

    def __init__(self, **options: Any) -> None:
        o = CenteredClipOptions(**options)
        self.tau = float(o.tau)
        self.iters = o.iters
        self._v: Tensor | None = None

    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        self.check(updates.shape[0])
        p = updates.shape[1]
        if self._v is None:
            v = updates.new_zeros(p)
        elif self._v.shape != (p,):
            raise FlwbcError(
                f"aggregator '{self.name}': its saved centre has {self._v.numel()} entries "
                f"but the updates have {p}"
            )
        else:
            v = self._v.to(device=updates.device, dtype=updates.dtype)
        w = weights.to(device=updates.device, dtype=updates.dtype)
        clipped_count = 0
        for _ in range(self.iters):
            clipped, was_clipped = clip_by_norm(updates - v, self.tau)
            v = v + w @ clipped
            clipped_count = int(was_clipped.sum())
        self._v = v.detach().clone()
        return Aggregate(v, {"clipped": clipped_count})

    def state_dict(self) -> dict[str, Tensor]:
        return {} if self._v is None else {"v": self._v.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self._v = state["v"].detach().clone() if "v" in state else None

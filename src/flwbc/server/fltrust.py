"""FLTrust (Cao et al., NDSS 2021): trust bootstrapped from a small clean root set.

The server trains the global model on its root set exactly as a client would, giving g0. Each
client update g_i gets trust score TS_i = ReLU(cos(g_i, g0)) and is rescaled to the norm of g0;
the aggregate is Σ TS_i · g_i·‖g0‖/‖g_i‖ / Σ TS_i (zero if every score is zero). The root set
(`root_size` training images, never the malicious set) is drawn by the experiment. Updates
with trust 0 are weighted out and flagged (the round's detection record).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from flwbc.plugin_options import StrictOptions
from flwbc.server.base import Aggregate, Aggregator, RoundContext, register_aggregator


class FLTrustOptions(StrictOptions):
    root_size: int = Field(
        100,
        ge=1,
        description="training images in the server's clean root set, on which it trains g0",
    )


@register_aggregator("fltrust")
class FLTrust(Aggregator):
    Options = FLTrustOptions

    def __init__(self, **options: Any) -> None:
        o = FLTrustOptions(**options)
        self.root_size = o.root_size

    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        if ctx.reference_update is None:
            raise RuntimeError("FLTrust needs the server's reference update")
        g0 = ctx.reference_update().to(updates.dtype)
        g0_norm = g0.norm()
        norms = updates.norm(dim=1).clamp_min(1e-12)
        cos = (updates @ g0) / (norms * g0_norm.clamp_min(1e-12))
        trust = torch.relu(cos)
        total = trust.sum()
        zero = [int(r) for r in torch.nonzero(trust == 0).flatten()]  # weighted out: flagged
        if float(total) == 0.0:
            return Aggregate(torch.zeros_like(g0), {"trust": trust.tolist()}, flagged=zero)
        scaled = updates * (g0_norm / norms).unsqueeze(1)
        info = {"trust": [round(v, 6) for v in trust.tolist()]}
        return Aggregate((trust / total) @ scaled, info, flagged=zero)

"""Drop the updates whose L2 norm falls below a fraction of the round's median norm (new, in no
paper: designed for FL-WBC behind a coordinate-wise rule, results/beyond/).

With FL-WBC deployed, every benign client adds Laplace noise to most coordinates at every
local step, so benign updates are large and of similar norm, and their values spread wide in
every coordinate; attackers that do not run FL-WBC send updates without that noise, whose
values then sit in the middle of each coordinate, where the median picks them (the order
statistics in results/beyond/BEYOND.md). An update far below the median norm lacks the noise
every benign client carries: this step drops the updates with norm < `fraction` × the median
of the round's norms (torch's median: the lower middle value for an even count), and
rescales the kept rows' weights to the round's total; it never drops the median row itself.
Without FL-WBC benign and malicious norms are alike and few updates are dropped. Updates with
a non-finite norm (an attacker whose training diverged) are dropped, and the median is taken
over the others.

Assumes: most of the round's updates are benign, and the attackers do not add FL-WBC's noise
themselves; an attacker that trains through FL-WBC's perturbation (`wbc_aware`, mode eot)
carries it and passes. Rows are dropped, so the rule after it sees fewer rows than clients.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from flwbc.context import RoundContext
from flwbc.plugin_options import PluginOptions
from flwbc.preagg.base import PreAggregator, register_pre_aggregator


class NormFloorOptions(PluginOptions):
    fraction: float = Field(
        0.5,
        gt=0,
        lt=1,
        json_schema_extra={"label": True},
        description="drop updates with L2 norm below this fraction of the round's median norm",
    )


@register_pre_aggregator("norm_floor")
class NormFloor(PreAggregator[NormFloorOptions]):
    """Drop the updates whose norm is below `fraction` of the median norm; record which."""

    Options = NormFloorOptions
    keeps_rows: ClassVar[bool] = False

    def apply(
        self, updates: Tensor, weights: Tensor, ctx: RoundContext, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, dict[str, Any]]:
        norms = updates.norm(dim=1)
        finite = norms.isfinite()
        if not finite.any():
            return updates[:0], weights[:0], {"dropped": list(self._rows(ctx, len(updates)))}
        keep = finite & (norms >= self.options.fraction * norms[finite].median())
        rows = self._rows(ctx, len(updates))
        dropped = [c for c, k in zip(rows, keep.tolist(), strict=True) if not k]
        kept = weights[keep]
        if kept.sum() > 0:
            kept = kept * (weights.sum() / kept.sum())
        return updates[keep], kept, {"dropped": dropped}

    @staticmethod
    def _rows(ctx: RoundContext, n: int) -> list[int]:
        return list(ctx.client_ids) if ctx.rows_are_clients else list(range(n))

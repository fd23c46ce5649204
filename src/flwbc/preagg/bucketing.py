"""Bucketing (Karimireddy, He & Jaggi, "Byzantine-robust learning on heterogeneous datasets via
bucketing", ICLR 2022, Algorithm 1).

The round's n updates are shuffled by a random permutation π drawn from the step's generator
and cut into ⌈n/s⌉ consecutive buckets of s updates (the last one smaller when s does not
divide n); each bucket's plain mean becomes one update, in bucket order, and its weight is the
sum of its members' weights. The rule that follows then sees ⌈n/s⌉ rows that are no longer
clients. Assumes nothing about the attackers: it lowers the heterogeneity of the benign updates
a robust rule sees, at the price of up to s-fold more contaminated rows (f Byzantine updates
can spoil f buckets); pick the rule's own f for the buckets.

Deviation: the paper writes each bucket as (1/s)·Σ of its members, also for a smaller last
bucket; here every bucket is the mean of the members it has.

`info["buckets"]` lists each bucket's members: client ids, or row positions when an earlier
step has already merged rows.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from flwbc.context import RoundContext
from flwbc.plugin_options import PluginOptions
from flwbc.preagg.base import PreAggregator, register_pre_aggregator


class BucketingOptions(PluginOptions):
    s: int = Field(2, ge=1, description="bucket size: updates averaged into one (1: no merging)")


def bucket_order(n: int, generator: torch.Generator) -> Tensor:
    """The random permutation of the rows 0..n-1 that bucketing cuts into buckets."""
    return torch.randperm(n, generator=generator, device=generator.device)


@register_pre_aggregator("bucketing")
class Bucketing(PreAggregator[BucketingOptions]):
    """Replace the updates by the means of random buckets of `s` of them."""

    keeps_rows = False

    Options = BucketingOptions

    def apply(
        self, updates: Tensor, weights: Tensor, ctx: RoundContext, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, dict[str, Any]]:
        s, n = self.options.s, updates.shape[0]
        order = bucket_order(n, generator).to(updates.device)
        buckets = [order[i : i + s] for i in range(0, n, s)]
        means = torch.stack([updates[b].mean(dim=0) for b in buckets])
        w = weights.to(updates.device)
        sums = torch.stack([w[b].sum() for b in buckets])
        rows = ctx.client_ids if ctx.rows_are_clients else list(range(n))
        info = {"buckets": [[int(rows[i]) for i in b.tolist()] for b in buckets]}
        return means, sums, info

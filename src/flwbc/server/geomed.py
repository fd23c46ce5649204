"""Geometric median by the smoothed Weiszfeld algorithm (RFA: Pillutla, Kakade & Harchaoui 2022,
"Robust aggregation for federated learning", Algorithm 3).

Approximately minimises g(z) = Σ_i α_i ||z - x_i||₂ over z, with α the round's FedAvg weights
(not rank-based). Starting from the weighted mean z = Σ α_i x_i, each iteration sets
β_i = α_i / max(ν, ||z - x_i||) and z ← Σ β_i x_i / Σ β_i, where ν = `eps` is the smoothing.
It stops after `max_iter` iterations, or as soon as the objective changes by less than `tol`
relative to its new value, |g(z_old) - g(z_new)| < tol · g(z_new) (so `tol = 0` runs all
`max_iter`), or when g(z_new) = 0 (all positively weighted updates are equal to z).
`info["iterations"]` is the number of Weiszfeld iterations run.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from torch import Tensor

from flwbc.plugin_options import StrictOptions
from flwbc.server.base import Aggregate, Aggregator, RoundContext, register_aggregator


class GeometricMedianOptions(StrictOptions):
    max_iter: int = Field(100, ge=1, description="most Weiszfeld iterations per round")
    eps: float = Field(
        1e-6,
        gt=0,
        allow_inf_nan=False,
        description="ν: smoothing, the smallest distance a weight is divided by",
    )
    tol: float = Field(
        1e-7,
        ge=0,
        allow_inf_nan=False,
        description="stop when the objective changes by less than tol times its value; 0: run "
        "all max_iter",
    )


@register_aggregator("geomed")
class GeometricMedian(Aggregator):
    Options = GeometricMedianOptions

    def __init__(self, **options: Any) -> None:
        o = GeometricMedianOptions(**options)
        self.max_iter = o.max_iter
        self.eps, self.tol = float(o.eps), float(o.tol)

    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        self.check(updates.shape[0])
        alpha = weights.to(device=updates.device, dtype=updates.dtype)
        z = alpha @ updates
        dist = (updates - z).norm(dim=1)
        obj = float(alpha @ dist)
        iterations = 0
        while iterations < self.max_iter:
            iterations += 1
            beta = alpha / dist.clamp_min(self.eps)
            z = (beta @ updates) / beta.sum()
            dist = (updates - z).norm(dim=1)
            new_obj = float(alpha @ dist)
            # a zero objective: z is every (positively weighted) update, the exact minimum
            converged = abs(obj - new_obj) < self.tol * new_obj or new_obj == 0.0
            obj = new_obj
            if converged:
                break
        return Aggregate(z, {"iterations": iterations})

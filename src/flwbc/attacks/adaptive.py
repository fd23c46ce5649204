"""ALIE and IPM with their factor chosen against the deployed defense each round (`alie_opt`,
`ipm_opt`), after ByzFL's optimal variants (Allouah, Guerraoui, et al., the ByzFL benchmark:
`byzfl` attacks optimised by line maximisation).

The fixed attacks send a direction scaled by a factor set in advance: ALIE μ − z·σ with z
from n and f (`flwbc.attacks.alie`), IPM −ε·μ with ε = 0.1 (`flwbc.attacks.ipm`). An attacker
that knows the server's rule (and its pre-aggregation steps) can instead try factors and keep
the one whose aggregate lands furthest from the benign mean: each round it maximises
‖server(updates with factor x) − μ‖₂ over x ≥ 0, μ the mean of the benign updates it sees.
`server` is the deployed pipeline run on copies of its state (`Attack.craft_against`), so
trying changes nothing of the real round, stateful rules included.

The search is flwbc's own exploration of x ≥ 0 within `evals` evaluations (ByzFL's
`LineMaximize` explores likewise by evaluating the aggregator; its step rules differ): start at
the fixed attack's factor, double the step upward while the objective improves, then probe
±step around the best so far, halving the step when neither side improves. Ties keep the
earlier (smaller-step) candidate, so the search is deterministic.

Knowledge: the fixed attack's (`knowledge`: omniscient or partial benign updates) plus the
server's rule, its options and pre-aggregation steps, as ByzFL's optimal attacks assume.
Client-side defenses are invisible to it (they act on benign clients before the server).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field
from torch import Tensor

from flwbc.attacks.alie import ALIE, ALIEOptions, alie_z
from flwbc.attacks.base import register_attack
from flwbc.attacks.ipm import IPM, IPMOptions
from flwbc.errors import FlwbcError

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


def line_maximize(
    objective: Callable[[float], float], start: float, evals: int
) -> tuple[float, float]:
    """The best x ≥ 0 found for `objective` in `evals` evaluations, and its value: from
    `start`, double the step upward while improving, then probe ±step around the best,
    halving the step when neither side improves. A NaN value (an aggregate of non-finite
    updates) is worse than any number."""

    def improves(fx: float, value: float) -> bool:
        return fx > value or (math.isnan(value) and not math.isnan(fx))

    best, value = start, objective(start)
    used, step = 1, max(abs(start), 1e-3)
    while used < evals:
        fx = objective(best + step)
        used += 1
        if not improves(fx, value):
            break
        best, value, step = best + step, fx, 2 * step
    step /= 2
    while used < evals:
        moved = False
        for x in (best + step, best - step):
            if x < 0 or used >= evals:
                continue
            fx = objective(x)
            used += 1
            if improves(fx, value):
                best, value, moved = x, fx, True
                break
        if not moved:
            step /= 2
    return best, value


class _Adaptive:
    """The factor search shared by `alie_opt` and `ipm_opt` (options with `evals` and
    `knowledge`)."""

    options: Any
    last_factor: float | None = None

    def direction(
        self, exp: ExperimentContext, seen: Tensor, own: Tensor, n: int, f: int
    ) -> tuple[Tensor, Tensor, float]:
        """(base, direction, start): the attackers send base + x·direction."""
        raise NotImplementedError

    def craft_against(
        self,
        exp: ExperimentContext,
        t: int,
        updates: Tensor,
        malicious: list[bool],
        server: Callable[[Tensor], Tensor],
    ) -> Tensor:
        bad = [i for i, m in enumerate(malicious) if m]
        good = [i for i, m in enumerate(malicious) if not m]
        seen = updates[good] if self.options.knowledge == "omniscient" else updates[bad]
        base, direction, start = self.direction(exp, seen, updates[bad], len(malicious), len(bad))
        mean = seen.mean(0)

        def candidate(x: float) -> Tensor:
            out = updates.clone()
            out[bad] = (base + x * direction).to(updates.dtype).expand(len(bad), -1)
            return out

        def objective(x: float) -> float:
            return float(torch.linalg.vector_norm(server(candidate(x)) - mean))

        x, _ = line_maximize(objective, start, self.options.evals)
        self.last_factor = x
        return candidate(x)


class ALIEOptOptions(ALIEOptions):
    evals: int = Field(16, ge=1, description="aggregations tried per round to choose z")


@register_attack("alie_opt")
class ALIEOpt(_Adaptive, ALIE[ALIEOptOptions]):
    """ALIE whose z maximises the distance of the deployed server's aggregate from the benign
    mean, searched each round from ALIE's own z."""

    Options = ALIEOptOptions

    def direction(
        self, exp: ExperimentContext, seen: Tensor, own: Tensor, n: int, f: int
    ) -> tuple[Tensor, Tensor, float]:
        if len(seen) < 2:
            raise FlwbcError("attack 'alie_opt' needs at least 2 benign updates to see for σ")
        opts = self.options
        start = opts.z if opts.z is not None else max(alie_z(n, f, opts.z_rule), 0.0)
        return seen.mean(0), -seen.std(0), start


class IPMOptOptions(IPMOptions):
    evals: int = Field(16, ge=1, description="aggregations tried per round to choose ε")


@register_attack("ipm_opt")
class IPMOpt(_Adaptive, IPM[IPMOptOptions]):
    """IPM whose ε maximises the distance of the deployed server's aggregate from the benign
    mean, searched each round from ε (`epsilon`, default 0.1)."""

    Options = IPMOptOptions

    def direction(
        self, exp: ExperimentContext, seen: Tensor, own: Tensor, n: int, f: int
    ) -> tuple[Tensor, Tensor, float]:
        mean = seen.mean(0)
        return torch.zeros_like(mean), -mean, self.options.epsilon

"""The attacks of Fang, Cao, Jia & Gong, "Local Model Poisoning Attacks to Byzantine-Robust
Federated Learning", USENIX Security 2020, on Krum (`fang_krum`) and on trimmed mean and median
(`fang_trmean`, the same attack for both in the paper). Both push the aggregate against s, the
sign of the direction the global model would move in without the attack, estimated as
s = sign(μ), μ the mean of the benign updates the attackers see (the paper takes the no-attack
change of the global model; the mean is what the NDSS'21 reimplementation,
github.com/vrt1shjwlkr/NDSS21-Model-Poisoning, uses: `deviation = torch.sign(agg_grads)` with
`agg_grads` the benign mean). A coordinate with μ_j = 0 counts as s_j = −1 (the paper has
s_j ∈ {−1, 1}).

Knowledge (`knowledge`): `omniscient` is the paper's full knowledge (every benign update of the
round, and the aggregation rule); `partial` is its partial knowledge: the attackers know the
rule but see only their own honest (before-attack) updates, which stand in for the benign ones.

From model space to update space. The paper crafts local *models* w' from the global model
w_Re; here a client sends an update u = w − w_Re, so every benign model w_i becomes its update
g_i and w_Re becomes 0.

`fang_krum`. The paper's first crafted model is w'_1 = w_Re − λ·s, so the crafted update is
−λ·s: the global-model term cancels. The paper's other c − 1 crafted models lie close to w'_1;
here all f attackers send exactly −λ·s (the limit of "close", as the NDSS'21 code does). λ
starts at the paper's upper bound, with m the simulated population (the f crafted updates plus
the m_b benign updates seen: m = n in full knowledge, 2f in partial) and c = f,

    λ₀ = min_i Σ_{l ∈ Γ_i} ‖g_l − g_i‖ / ((m − 2c − 1)·√d) + max_i ‖g_i − 0‖ / √d,

Γ_i the m − c − 2 benign updates nearest g_i (i, l over the seen updates, d parameters), and is
halved until Krum, simulated on [f crafted; seen], selects a crafted update, or until
λ ≤ `threshold` (then that last λ, ≤ threshold, is sent without a further test, as the
NDSS'21 code does). The simulation reuses the project's own Krum scoring
(`flwbc.server.krum`), with its `f` option: `krum_f` if given, else the deployed rule's
`Aggregator.krum_f` (the `f` of Krum and Multi-Krum), else the round's number of attackers
(the paper's Krum assumes c).
The simulation puts the crafted rows first, so a tied score counts as selected (the server's
Krum breaks ties by the round's row order).
Deviations: (a) the second term is the largest benign update norm, the paper's
max_i D(w_i, w_Re) translated; the NDSS'21 code (`compute_lambda_fang`) uses the distance to
the benign mean instead and sums m − 2c − 2 neighbours, not the paper's m − c − 2; we follow
the paper. (b) In partial knowledge m = 2c makes m − 2c − 1 = −1, and with few benign updates
it can be 0 in full knowledge too: the denominator is clamped to at least 1 (the bound is only
a starting point for the halving).

`fang_trmean` (the paper's full-knowledge trimmed-mean attack, also its median attack): with
u_max,j and u_min,j the largest and smallest seen benign value of coordinate j, each attacker
sends, per coordinate, a value drawn uniformly from

- s_j = −1: [u_max,j, b·u_max,j] if u_max,j > 0, else [u_max,j / b, u_max,j];
- s_j = +1: [u_min,j / b, u_min,j] if u_min,j > 0, else [b·u_min,j, u_min,j];

with `b` = 2 (paper). Partial knowledge (paper): from the mean μ_j and sample standard deviation
σ_j of the attackers' own honest updates, s_j = −1: [μ_j + 3σ_j, μ_j + 4σ_j]; s_j = +1:
[μ_j − 4σ_j, μ_j − 3σ_j] (needs f ≥ 2). Value = low + r·(high − low), r ~ U[0, 1) from the
stream (seed, "attack", t, "fang_trmean", attacker position), one r per attacker and coordinate.
Deviation: the paper's intervals are on model parameters (its sign tests are on w_max,j and
w_min,j); here they are applied to the updates, as the NDSS'21 reimplementation does (a scaling
by b does not commute with adding w_Re, so the translation is not exact). That code multiplies
both branches by `deviation > 0`, a bug that sends 0 on half the coordinates; not reproduced.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from pydantic import Field
from torch import Tensor

from flwbc.attacks.agr_search import sq_dists_to
from flwbc.attacks.base import register_attack
from flwbc.attacks.crafted import CraftedAttack, CraftedOptions
from flwbc.errors import FlwbcError
from flwbc.rng import torch_generator
from flwbc.server.base import build_aggregator
from flwbc.server.krum import krum_scores, pairwise_sq_dists

if TYPE_CHECKING:
    from flwbc.config import ExperimentConfig
    from flwbc.context import ExperimentContext


class FangKrumOptions(CraftedOptions):
    krum_f: int | None = Field(
        None,
        ge=0,
        description="f of the Krum the attackers simulate; default: the deployed rule's Krum f "
        "(krum, multikrum), else the round's number of attackers",
    )
    threshold: float = Field(
        1e-5,
        gt=0,
        description="λ is halved until Krum selects the crafted update or λ ≤ threshold "
        "(paper and NDSS'21 code: 1e-5)",
    )


class FangTrimOptions(CraftedOptions):
    b: float = Field(
        2.0,
        gt=1,
        description="full knowledge: crafted values lie up to b times beyond the benign "
        "extreme (paper: 2)",
    )


def benign_direction(seen: Tensor) -> Tensor:
    """s [P]: the sign of the seen updates' mean, 0 counted as −1."""
    return torch.where(seen.mean(0) > 0, 1.0, -1.0).to(seen.dtype)


def fang_krum_lambda(seen: Tensor, f: int, seen_sq: Tensor | None = None) -> float:
    """The paper's upper bound on λ for the m_b seen benign updates [m_b, P] and f attackers
    (`seen_sq`: their pairwise squared distances, when already computed)."""
    mb, d = seen.shape
    m, c = mb + f, f
    sq = pairwise_sq_dists(seen) if seen_sq is None else seen_sq
    dist = sq.clamp_min(0).sqrt().fill_diagonal_(float("inf"))
    k = max(m - c - 2, 0)
    nearest = dist.sort(dim=1).values[:, :k].sum(dim=1)
    term1 = nearest.min().item() / (max(m - 2 * c - 1, 1) * math.sqrt(d))
    term2 = torch.linalg.vector_norm(seen, dim=1).max().item() / math.sqrt(d)
    return term1 + term2


def krum_picks_crafted(seen_sq: Tensor, seen: Tensor, crafted: Tensor, f: int, krum_f: int) -> bool:
    """Whether Krum (its f = `krum_f`) on [f copies of `crafted`; seen] selects a crafted row,
    `seen_sq` the seen updates' pairwise squared distances."""
    mb = len(seen)
    to_crafted = sq_dists_to(seen, crafted)
    dists = seen_sq.new_zeros(f + mb, f + mb)
    dists[f:, f:] = seen_sq
    dists[:f, f:] = to_crafted
    dists[f:, :f] = to_crafted[:, None]
    return int(torch.argmin(krum_scores(dists, krum_f))) < f


@register_attack("fang_krum")
class FangKrum(CraftedAttack[FangKrumOptions]):
    """Send −λ·s, λ halved from the paper's bound until Krum would select it."""

    Options = FangKrumOptions

    def __init__(self, cfg: ExperimentConfig, options: FangKrumOptions | None = None) -> None:
        super().__init__(cfg, options)
        srv = cfg.server
        self.deployed_krum_f = build_aggregator(srv.aggregator, srv.options).krum_f
        """The deployed rule's Krum f (`Aggregator.krum_f`), None for a rule without one."""

    def krum_f(self, f: int) -> int:
        """The f of the simulated Krum (see `krum_f`)."""
        if self.options.krum_f is not None:
            return self.options.krum_f
        return f if self.deployed_krum_f is None else self.deployed_krum_f

    def lam(self, seen: Tensor, f: int) -> float:
        """λ for the seen benign updates [m_b, P] and f attackers."""
        s = benign_direction(seen)
        seen_sq = pairwise_sq_dists(seen)
        krum_f = self.krum_f(f)
        lam = fang_krum_lambda(seen, f, seen_sq)
        while lam > self.options.threshold:
            if krum_picks_crafted(seen_sq, seen, -lam * s, f, krum_f):
                break
            lam /= 2
        return lam

    def forge(
        self, exp: ExperimentContext, t: int, seen: Tensor, own: Tensor, *, n: int, f: int
    ) -> Tensor:
        if len(seen) < 1:
            raise FlwbcError("attack 'fang_krum' needs at least 1 benign update to see")
        crafted = -self.lam(seen, f) * benign_direction(seen)
        return crafted.expand(f, -1).clone()


def fang_trim_interval(seen: Tensor, b: float, knowledge: str) -> tuple[Tensor, Tensor]:
    """The per-coordinate interval [low, high] ([P] each) the crafted values are drawn from."""
    up = benign_direction(seen) < 0  # s_j = −1: push coordinate j up
    if knowledge == "partial":
        mu, sd = seen.mean(0), seen.std(0)
        low = torch.where(up, mu + 3 * sd, mu - 4 * sd)
        return low, low + sd
    hi, lo = seen.max(0).values, seen.min(0).values
    above_low = torch.where(hi > 0, hi, hi / b)
    above_high = torch.where(hi > 0, hi * b, hi)
    below_low = torch.where(lo > 0, lo / b, lo * b)
    return torch.where(up, above_low, below_low), torch.where(up, above_high, lo)


@register_attack("fang_trmean")
class FangTrim(CraftedAttack[FangTrimOptions]):
    """Send, per coordinate, random values beyond the benign extreme against s."""

    Options = FangTrimOptions

    def forge(
        self, exp: ExperimentContext, t: int, seen: Tensor, own: Tensor, *, n: int, f: int
    ) -> Tensor:
        knowledge = self.options.knowledge
        if len(seen) < (2 if knowledge == "partial" else 1):
            raise FlwbcError(
                f"attack 'fang_trmean' ({knowledge} knowledge) needs at least "
                f"{2 if knowledge == 'partial' else 1} benign updates to see (got {len(seen)})"
            )
        low, high = fang_trim_interval(seen, self.options.b, knowledge)
        rows = []
        for j in range(f):
            gen = torch_generator(self.cfg.seed, "attack", t, "fang_trmean", j, device=own.device)
            r = torch.rand(seen.shape[1], generator=gen, device=own.device, dtype=seen.dtype)
            rows.append(low + r * (high - low))
        return torch.stack(rows)

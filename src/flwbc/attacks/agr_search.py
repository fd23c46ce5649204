"""The shared part of the AGR-agnostic attacks Min-Max and Min-Sum (Shejwalkar & Houmansadr,
"Manipulating the Byzantine: Optimizing Model Poisoning Attacks and Defenses for Federated
Learning", NDSS 2021): every attacker sends the same update m = μ + γ·∇p, μ the mean of the
benign updates the attackers see and ∇p a fixed perturbation direction, with γ the largest
value the paper's search (its Algorithm 1) finds for which m passes the attack's distance
constraint (`min_max`, `min_sum`, each its own module subclassing `AgrAgnosticAttack`).

Perturbation directions (`direction`), as in the paper and its official code
(github.com/vrt1shjwlkr/NDSS21-Model-Poisoning, the notebooks' `our_attack_dist` and
`our_attack_score`):

- `unit_vec`: ∇p = −μ/‖μ‖ (the inverse unit vector; 0 when μ = 0);
- `std`: ∇p = −σ, σ the coordinate-wise sample standard deviation (`torch.std`) of the seen
  updates (inverse standard deviation);
- `sign`: ∇p = −sign(μ) (inverse sign).

Default `std`: the official CIFAR-10 notebooks (cifar10/release-fedsgd-alexnet-*.ipynb) run the
AGR-agnostic attacks with `dev_type = 'std'` (the FEMNIST ones with `'sign'`; the functions'
own default argument is `'unit_vec'`).

The search (`halving_search`): γ starts at γ_init with step γ_init; each try that passes sets
γ_succ = γ and moves γ up by step/2, each that fails moves γ down by step/2, and the step halves,
until |γ_succ − γ| ≤ τ; the result is γ_succ (0 when no try passes, i.e. m = μ). This is the
official code's loop (`lamda = 10.0`, `threshold_diff = 1e-5`), hence the defaults γ_init = 10
(CIFAR-10 notebooks; the FEMNIST ones use 50, the unknown-gradient trimmed-mean and median ones
30) and τ = 1e-5. It only explores γ ∈ [0, 2·γ_init): raise `gamma_init` if γ_succ ends near
2·γ_init. The loop stops after 200 halvings at the latest (the step is then below any float's
resolution), a guard the official code does not need in exact arithmetic.

Knowledge: `omniscient` (the paper's full knowledge of the benign updates) or `partial` (the
paper's "unknown benign gradients" setting: μ, σ and the constraint's reference distances come
from the attackers' own honest updates only, as the official unknown-gradient notebooks do).
At least 2 seen updates are needed (σ, and a non-trivial distance bound).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, TypeVar

import torch
from pydantic import Field
from torch import Tensor

from flwbc.attacks.crafted import CraftedAttack, CraftedOptions
from flwbc.errors import FlwbcError

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext

Direction = Literal["unit_vec", "std", "sign"]

MAX_HALVINGS = 200


class AgrAgnosticOptions(CraftedOptions):
    direction: Direction = Field(
        "std",
        description="perturbation ∇p: unit_vec = −μ/‖μ‖, std = −σ (coordinate-wise std), "
        "sign = −sign(μ) of the seen benign updates (official CIFAR-10 default: std)",
    )
    gamma_init: float = Field(
        10.0, gt=0, description="γ_init, first γ tried and first step; γ < 2·γ_init (official: 10)"
    )
    tau: float = Field(
        1e-5, gt=0, description="τ: the search stops when |γ_succ − γ| ≤ τ (official: 1e-5)"
    )


GO = TypeVar("GO", bound=AgrAgnosticOptions)


def perturbation(seen: Tensor, direction: str) -> Tensor:
    """∇p [P] of the seen benign updates [m, P] for a `direction` (module docstring)."""
    mu = seen.mean(0)
    if direction == "unit_vec":
        norm = torch.linalg.vector_norm(mu)
        return -mu / norm if norm > 0 else torch.zeros_like(mu)
    if direction == "std":
        return -seen.std(0)
    if direction == "sign":
        return -torch.sign(mu)
    raise ValueError(f"unknown perturbation direction {direction!r}")


def halving_search(accept: Callable[[float], bool], gamma_init: float, tau: float) -> float:
    """The largest γ the paper's Algorithm 1 finds with `accept(γ)` true (0 if none)."""
    gamma, step, succ = float(gamma_init), float(gamma_init), 0.0
    for _ in range(MAX_HALVINGS):
        if abs(succ - gamma) <= tau:
            break
        if accept(gamma):
            succ = gamma
            gamma += step / 2
        else:
            gamma -= step / 2
        step /= 2
    return succ


def sq_dists_to(seen: Tensor, x: Tensor) -> Tensor:
    """[m] squared L2 distances from each row of `seen` [m, P] to `x` [P]."""
    return (seen - x).pow(2).sum(dim=1)


class AgrAgnosticAttack(CraftedAttack[GO]):
    """Send μ + γ·∇p, γ the largest the search finds that passes `constraint`."""

    Options = AgrAgnosticOptions

    @abstractmethod
    def constraint(self, seen: Tensor) -> Callable[[Tensor], bool]:
        """Whether a malicious update [P] passes the attack's test against the seen updates."""

    def gamma(self, seen: Tensor, p: Tensor) -> float:
        """γ for the seen updates [m, P] and perturbation ∇p [P]."""
        ok = self.constraint(seen)
        mu = seen.mean(0)
        return halving_search(lambda g: ok(mu + g * p), self.options.gamma_init, self.options.tau)

    def forge(
        self, exp: ExperimentContext, t: int, seen: Tensor, own: Tensor, *, n: int, f: int
    ) -> Tensor:
        if len(seen) < 2:
            raise FlwbcError(
                f"attack '{self.name}' needs at least 2 benign updates to see (got {len(seen)})"
            )
        p = perturbation(seen, self.options.direction)
        m = seen.mean(0) + self.gamma(seen, p) * p
        return m.expand(f, -1).clone()

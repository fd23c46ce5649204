"""A BadNets attacker that knows FL-WBC is deployed (white box): an adaptive attack on FL-WBC
(Sun et al., NeurIPS 2021, §5.1 eq. 8-10), which no public attack targets.

The claim tested is the paper's §5.2, "Robustness to Adaptive attacks": FL-WBC "is robust
against adaptive attacks [...] since the attacker cannot know the detailed defensive
operations", because its perturbation runs on benign clients' private data, the sampled clients
are unpredictable, and "the defense during the benign local training is mainly dominated by the
random matrix Υ [...] which is also unpredictable. With such unpredictability and randomness of
our defense, no effective attack can be adapted." The attacker here accepts all three points:
it never sees a benign client's data, which clients are sampled, or any benign client's noise
draws. What it knows is what §5.2 does not hide, the mechanism and its parameters: that FL-WBC
is deployed, the rule of eq. 9-10 (the Hessian-diagonal proxy h from consecutive local steps,
the test h ≤ |Υ|, the added η·Υ), the noise's distribution and strength s, and the
reference-code variants in use (noise parametrisation, parameter set, Hessian proxy, per-epoch
reset). The question is whether knowing the *distribution* of a random, client-local defense
is enough to adapt to it, which §5.2 argues it is not.

Everything else is BadNets (`flwbc.attacks.badnets`, options of
`flwbc.attacks.backdoor.BackdoorOptions`): each attacker trains on its own images, a
`poison_fraction` of them triggered and relabelled `target`, with the experiment's local lr,
momentum and batch size. `mode` chooses the adaptation:

- `eot` (expectation over the defense's transformation, in the spirit of Athalye et al.'s EOT
  against randomised defenses): the attacker applies FL-WBC's own step to its malicious local
  training: after every SGD step it runs `flwbc.client.wbc.WBCStep` with the simulated options,
  on its own poisoned data, with noise from its own stream (seed, "wbc_aware", t, c) (never the
  benign clients' (seed, "wbc", t, c)), so the implant SGD converges to is one trained against
  FL-WBC's perturbation: one noise draw per step, the expectation taken along the trajectory
  rather than by averaging draws within a step. Assumes: the perturbation
  the benign clients will apply after the attack acts on the backdoor roughly as the attacker's
  own simulation does (its curvature estimate comes from poisoned data, theirs from clean
  data). The update sent is the attacker's perturbed model minus the global model (its own
  noise included), unscaled.
- `offmask` (place the change where the mask does not reach): the attacker trains plain BadNets
  while recording FL-WBC's curvature estimate of eq. 10 at each of its steps, h = |ΔW_i −
  ΔW_{i−1}|/η (or |g_i − g_{i−1}| with `hessian: gradient`, exactly the quantity `WBCStep`
  tests, memory reset per epoch with `reset_each_epoch`), averages it over its last `window`
  steps (default 1: the h of its last step, what FL-WBC computes there; a longer mean thins the
  per-step h's heavy tail, so fewer coordinates pass), and sends its update only on the
  coordinates FL-WBC would leave alone: where that h exceeds the `quantile` of |Υ| (|Υ| of a
  Laplace with scale b is exponential with mean b, so its q-quantile is −b·ln(1 − q); the
  default q = 0.5 is its median, b·ln 2, with b = s/√2 for `noise: std`, s for `noise: scale`),
  plus, with `params: weights`, every coordinate FL-WBC never perturbs (biases). A coordinate
  kept at q has h above the typical |Υ|, so FL-WBC perturbs it at a step with probability at
  most 1 − q by the attacker's estimate. Other coordinates of the update are set to 0.
  `rescale`: multiply the kept part so that its L2 norm equals the whole update's (default: no,
  the kept coordinates are sent as trained). Assumes: the benign clients' h at the coordinates
  the backdoor uses is close to the attacker's estimate from its own poisoned data at the
  round's global model (the mask is recomputed by every benign client at every step, on clean
  data, from a moving model). With s = 0 nothing is ever perturbed and the whole update is kept;
  with fewer than two local steps h is undefined and the whole update is kept too.

Both modes with s = 0 are BadNets bit for bit.

Which FL-WBC is simulated: the deployed one when the experiment has one (the first
`flwbc.defenses.wbc.WBCDefense` in the benign clients' chain, found by type: its options and s),
else the attack's own `s`, `noise`, `params`, `hessian` and `reset_each_epoch`, whose defaults
are FL-WBC's (`flwbc.client.wbc.WBCOptions`). The learning rate is the experiment's local lr,
which the attackers train with as the benign clients do.

Not built: the attacker never sees the benign clients' curvature or noise, so neither mode
aligns with their masks; no scaling of the update beyond `rescale`, and no norm bound.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from flwbc.attacks.backdoor import BackdoorAttack, BackdoorOptions
from flwbc.attacks.base import register_attack
from flwbc.client.transform import ClientRun, SGDStep
from flwbc.client.wbc import WBCOptions, WBCStep, laplace_scale
from flwbc.defenses.wbc import WBCDefense
from flwbc.rng import torch_generator

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


def _wbc_default(name: str) -> Any:
    """FL-WBC's own default of its option `name` (stated once, in `WBCOptions`)."""
    return WBCOptions.model_fields[name].default


class WBCAwareOptions(BackdoorOptions):
    """BadNets' options, the FL-WBC simulated when the experiment deploys none (FL-WBC's own
    defaults) and the adaptation's."""

    s: float = Field(
        _wbc_default("s"),
        ge=0,
        description="FL-WBC's strength s simulated when none is deployed (else the deployed one's)",
    )
    noise: Literal["std", "scale"] = Field(
        _wbc_default("noise"),
        description="FL-WBC's noise simulated when none is deployed: Laplace std s (paper) or "
        "scale s (reference code)",
    )
    params: Literal["all", "weights"] = Field(
        _wbc_default("params"),
        description="FL-WBC's perturbed parameters simulated when none is deployed: all "
        "(paper) or weights only (reference code)",
    )
    hessian: Literal["update", "gradient"] = Field(
        _wbc_default("hessian"),
        description="FL-WBC's Hessian proxy simulated when none is deployed: change of the SGD "
        "update / lr (paper) or of the raw gradient (reference code)",
    )
    reset_each_epoch: bool = Field(
        _wbc_default("reset_each_epoch"),
        description="FL-WBC's per-epoch reset simulated when none is deployed (reference code)",
    )
    mode: Literal["eot", "offmask"] = Field(
        "eot",
        description="eot: train through FL-WBC's own perturbation (own noise); offmask: send "
        "the update only where FL-WBC's curvature estimate exceeds the typical |Υ|",
    )
    quantile: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="offmask: keep coordinates whose h exceeds this quantile of |Υ| "
        "(0.5: the median, b·ln 2)",
    )
    window: int = Field(
        1,
        ge=1,
        description="offmask: h is averaged over the attacker's last `window` steps (1: its "
        "last step's, eq. 10 as FL-WBC computes it)",
    )
    rescale: bool = Field(
        False, description="offmask: scale the kept update to the whole update's L2 norm"
    )


def wbc_threshold(s: float, noise: str, quantile: float) -> float:
    """The `quantile` of |Υ| for FL-WBC strength s: |Υ| ~ Exponential(mean b), so
    −b·ln(1 − q) (b·ln 2 at q = 0.5)."""
    return -laplace_scale(s, noise) * math.log1p(-quantile)


class CurvatureProbe:
    """Records one attacker's FL-WBC Hessian-diagonal estimate h of eq. 10 at each step (as
    `WBCStep` computes it) over the last `window` steps; changes nothing."""

    def __init__(self, run: ClientRun, cfg: WBCOptions, lr: float, window: int) -> None:
        self.run, self.cfg, self.lr = run, cfg, lr
        self.prev: Tensor | None = None
        self.history: deque[Tensor] = deque(maxlen=window)

    def new_epoch(self) -> None:
        if self.cfg.reset_each_epoch:
            self.prev = None

    def record(self, step: Tensor, grad: Tensor) -> None:
        proxy = step if self.cfg.hessian == "update" else grad
        prev, self.prev = self.prev, proxy.detach()
        if prev is not None:
            h = (proxy.detach() - prev).abs_()
            self.history.append(h.div_(self.lr) if self.cfg.hessian == "update" else h)

    def estimate(self) -> Tensor | None:
        """The mean h over the last steps [P] (None before two steps)."""
        if not self.history:
            return None
        return torch.stack(list(self.history)).mean(0)


@register_attack("wbc_aware")
class WBCAware(BackdoorAttack[WBCAwareOptions]):
    """BadNets adapted to FL-WBC: train through its perturbation (eot) or send the update only
    where its mask does not reach (offmask)."""

    Options = WBCAwareOptions

    def simulated(self, exp: ExperimentContext) -> WBCOptions:
        """The FL-WBC the attacker simulates: the deployed one's options, else its own."""
        for d in exp.defenses:
            if isinstance(d, WBCDefense):
                return d.options
        return WBCOptions(**{k: getattr(self.options, k) for k in WBCOptions.model_fields})

    def threshold(self, exp: ExperimentContext) -> float:
        """offmask: the h above which a coordinate is kept (the `quantile` of |Υ|)."""
        sim = self.simulated(exp)
        return wbc_threshold(sim.s, sim.noise, self.options.quantile)

    def init(self, run: ClientRun) -> WBCStep | CurvatureProbe:
        """eot: FL-WBC's step with the simulated options, on the attacker's own stream
        (seed, "wbc_aware", t, c); offmask: the probe of h that `final` reads."""
        exp = run.exp
        sim = self.simulated(exp)
        lr = self.cfg.local.lr
        if self.options.mode == "eot":
            gen = torch_generator(
                exp.cfg.seed, "wbc_aware", run.round, run.client, device=exp.device
            )
            return WBCStep(sim, lr, exp.model.weight_mask, gen)
        return CurvatureProbe(run, sim, lr, self.options.window)

    def start_epoch(self, state: WBCStep | CurvatureProbe, epoch: int) -> None:
        state.new_epoch()

    def after_step(self, state: WBCStep | CurvatureProbe, s: SGDStep) -> Tensor:
        if isinstance(state, CurvatureProbe):
            state.record(s.step, s.grad)
            return s.w_hat
        return state(s.w_hat.unsqueeze(0), s.step.unsqueeze(0), s.grad.unsqueeze(0))[0]

    def keep_mask(self, exp: ExperimentContext, h: Tensor | None) -> Tensor | None:
        """offmask: boolean [P], the coordinates sent (h above the threshold, and those FL-WBC
        never perturbs); None: all of them (s = 0, or no estimate of h)."""
        sim = self.simulated(exp)
        if h is None or laplace_scale(sim.s, sim.noise) == 0.0:
            return None
        keep = h > self.threshold(exp)
        if sim.params == "weights":
            keep |= ~exp.model.weight_mask.to(keep.device)
        return keep

    def final(self, state: WBCStep | CurvatureProbe, update: Tensor) -> Tensor:
        if not isinstance(state, CurvatureProbe):
            return update
        keep = self.keep_mask(state.run.exp, state.estimate())
        if keep is None:
            return update
        kept = torch.where(keep, update, torch.zeros_like(update))
        if self.options.rescale:
            norm = kept.norm()
            if float(norm) > 0.0:
                kept = kept * (update.norm() / norm)
        return kept

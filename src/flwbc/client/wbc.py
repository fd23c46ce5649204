"""FL-WBC: perturb the near-kernel directions of the local Hessian (paper §5.1, eq. 8-10).

After each ordinary SGD step Ŵ_{i+1} = W_i − η ΔW-step (eq. 8), the diagonal of the local Hessian
is estimated from how much the update changed since the previous step,
h = |(Ŵ_{i+1} − W_i) − ΔW_i| / η, and the parameter receives η·Υ where h ≤ |Υ| (eq. 9-10),
Υ having i.i.d. Laplace(0, b) entries. Small h marks directions in which the benign objective
is flat (the Hessian's kernel), which is where the attack effect on parameters persists.

ΔW_i is the previous step's SGD update (without its perturbation), so h is the finite-difference
Hessian-diagonal proxy the paper derives. The reference code instead uses |g_i − g_{i−1}|, the
change of the raw gradient, forgets it at every local epoch, and perturbs only "weight"
parameters; each is an option in `WBCOptions`.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from flwbc.plugin_options import PluginOptions
from flwbc.transforms import to_symmetric_


class WBCOptions(PluginOptions):
    """FL-WBC's options (`defense.options.wbc`; paper §5.1, eq. 8-10)."""

    s: float = Field(
        0.4, ge=0, json_schema_extra={"label": True}, description="perturbation strength"
    )
    noise: Literal["std", "scale"] = Field(
        "std",
        description="std: Laplace noise with std s (paper); scale: Laplace scale s, i.e. "
        "std √2·s (reference code)",
    )
    params: Literal["all", "weights"] = Field(
        "all", description="perturb every parameter (paper) or only weights, not biases (reference)"
    )
    hessian: Literal["update", "gradient"] = Field(
        "update",
        description="Hessian-diagonal proxy: change of the SGD update / lr (paper eq. 10) or "
        "change of the raw gradient (reference code); identical without momentum",
    )
    reset_each_epoch: bool = Field(
        False,
        description="forget the previous step at each local epoch, so the first step of every "
        "epoch is not perturbed (reference code); default: only the round's first step",
    )


def laplace_scale(s: float, noise: str) -> float:
    """Laplace scale b for strength s: the paper draws Υ with std s (b = s/√2), the reference
    code passes s as the scale (std √2·s)."""
    if noise == "std":
        return s / math.sqrt(2.0)
    if noise == "scale":
        return s
    raise ValueError(f"unknown Laplace parametrisation '{noise}'")


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="flwbc-rng")
    return _POOLS[workers]


class WBCStep:
    """The stateful FL-WBC step of one round, remembering the previous step.

    The FL-WBC defense hands it one client's row ([1, P]); it also takes G rows [G, P] at once,
    each drawing its noise from its own generator with its own strength, which the tests and
    `benchmarks/bench_wbc_step.py` use.
    """

    def __init__(
        self,
        cfg: WBCOptions,
        lr: float,
        weight_mask: Tensor,
        generator: torch.Generator | list[torch.Generator],
        strengths: list[float] | None = None,
    ):
        self.cfg = cfg
        self.lr = lr
        self.generators = generator if isinstance(generator, list) else [generator]
        s = strengths if strengths is not None else [cfg.s] * len(self.generators)
        self.scales = [laplace_scale(x, cfg.noise) for x in s]
        device = weight_mask.device
        self.active = torch.tensor([sc != 0.0 for sc in self.scales], device=device)
        # −η·b per row: η|Υ| = −η·b·log(1 − |u|)
        self.lr_scales = torch.tensor(self.scales, device=device).mul_(-lr).unsqueeze(1)
        self.allowed = weight_mask if cfg.params == "weights" else None
        self.numel = weight_mask.numel()
        self.prev: Tensor | None = None
        self.perturbed = torch.zeros(len(self.generators), dtype=torch.float64, device=device)
        self.steps = 0

    def new_epoch(self) -> None:
        if self.cfg.reset_each_epoch:
            self.prev = None

    def __call__(self, w_hat: Tensor, step: Tensor, grad: Tensor) -> Tensor:
        """Apply FL-WBC after the SGD step `w_hat = w + step` taken with gradient `grad`.

        Written for few passes over the [G, P] tensors (this is the batched engine's hottest
        loop): the Laplace magnitude is computed once, already multiplied by η, and both sides
        of eq. 9's test h ≤ |Υ| are multiplied by η, so the update-proxy h = |ΔW|/η needs no
        division: |ΔW| ≤ η|Υ|.
        """
        proxy = step if self.cfg.hessian == "update" else grad
        prev, self.prev = self.prev, proxy
        if prev is None or not any(self.scales):
            return w_hat
        g = len(self.generators)
        u = self._uniforms(w_hat.dtype, w_hat.device)
        # η|Υ| = −η·b·log(1 − |u|), with each row's own scale b
        lr_noise = torch.log1p(u.abs().neg_()).mul_(self.lr_scales.to(w_hat.dtype))
        diff = (proxy - prev).abs_().view(g, self.numel)
        if self.cfg.hessian == "gradient":
            diff.mul_(self.lr)
        mask = diff <= lr_noise
        if self.allowed is not None:
            mask &= self.allowed
        if not bool(self.active.all()):
            mask &= self.active.unsqueeze(1)
        self.perturbed += mask.sum(1)
        self.steps += 1
        out = torch.addcmul(w_hat.view(g, self.numel), lr_noise.copysign_(u), mask)
        return out.view_as(w_hat)

    def _uniforms(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """[G, P] symmetric uniforms (`to_symmetric_`), row r from generator r; rows with
        strength 0 draw nothing and stay 0.

        torch's CPU generators are sequential, and drawing is the largest single cost of FL-WBC
        with several rows, so on the CPU the rows are drawn by up to `torch.get_num_threads()`
        threads at once (each generator still gives the same stream)."""
        u = torch.empty(len(self.generators), self.numel, dtype=torch.float32, device=device)
        rows = list(range(len(self.generators)))

        def draw(part: list[int]) -> None:
            for r in part:
                if self.scales[r] != 0.0:
                    u[r].uniform_(0.0, 1.0, generator=self.generators[r])
                else:
                    u[r].fill_(0.5 * (1.0 - 2.0**-24))  # maps to 0 below

        workers = min(torch.get_num_threads(), len(rows)) if u.device.type == "cpu" else 1
        if workers > 1:
            list(_pool(workers).map(draw, [rows[i::workers] for i in range(workers)]))
        else:
            draw(rows)
        return to_symmetric_(u).to(dtype)

    def perturbed_fractions(self) -> list[float]:
        """Per row, the mean fraction of parameters perturbed per perturbed step."""
        if self.steps == 0:
            return [0.0] * len(self.generators)
        return (self.perturbed / (self.steps * self.numel)).tolist()

    def stats(self) -> list[dict[str, float]]:
        """Per row, the record's `wbc_perturbed` (what the defense's `stats` reports)."""
        return [{"wbc_perturbed": s} for s in self.perturbed_fractions()]

    def perturbed_fraction(self) -> float:
        """The same for a single client."""
        return self.perturbed_fractions()[0]

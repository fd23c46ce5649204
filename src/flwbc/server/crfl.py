"""CRFL's training-time defense (Xie, Chen, Chen & Li, "CRFL: Certifiably Robust Federated
Learning against Backdoor Attacks", ICML 2021).

Each round t the server takes the FedAvg of the updates, w' = w + Σ_k p_k Δ_k, clips the new
global MODEL's parameters to L2 norm ρ_t, w'' = w' · min(1, ρ_t/‖w'‖), and adds Gaussian noise,
w_new = w'' + ε with ε ~ N(0, σ² I) drawn from the round's server stream (`ctx.generator`).
flwbc applies an update to w, so the rule returns w_new − w (w = `ctx.global_weights`).
Clipping bounds how far any update can move the model and the noise smooths it; together they
bound how much a backdoor injected in some rounds survives later rounds, which is what the
paper's certificate builds on.

Assumes the backdoor is injected in a bounded number of rounds by a bounded number of attackers
with bounded updates, and that the model still learns under the norm bound and the noise (the
bound must exceed the norm of a good model).

Options, defaults from the official code (AI-secure/CRFL) for its EMNIST setting:
- `rho` (100): the cap on the clipping bound (`param_clip_thres` in
  `configs/emnist_params.yaml`; 15 in `configs/mnist_params.yaml`);
- `rho_slope` (0.25) and `rho_start` (4): the bound grows with the round,
  ρ_t = min(rho, rho_slope·t + rho_start) for 1-based rounds t (`main.py`: `epoch*0.25+4` for
  EMNIST, `epoch*0.1+2` for MNIST); `rho_slope: 0` gives a fixed bound min(rho, rho_start);
- `sigma` (0.01): the noise's std per parameter (`sigma_param`, the same in the MNIST and
  EMNIST configs); 0 turns the noise off.
The EMNIST setting is the default because the MNIST one starves flwbc's `mlp` (159,010
parameters, ‖w‖ ≈ 8.4 at initialisation): its noise alone has norm σ·√P ≈ 4, above the first
rounds' bounds 2.1, 2.2, ..., and two rounds of training stay near chance. The bound must exceed
the norm of a good model; tune it (and σ) to the model.

Not built: the test-time certification (parameter smoothing: evaluating many noisy copies of
the final model and certifying the majority prediction); this rule only trains as CRFL does.

Deviations: the official code averages the updates uniformly over the round's clients
(dividing by `num_models`), here the FedAvg weights are used (the same under uniform
weighting); it clips with ρ_t/(‖w'‖ + 1e-6), here exactly ρ_t/‖w'‖ (`transforms.clip_by_norm`);
it evaluates the clipped model before adding the noise, here the noise belongs to the round's
model, so the round's metrics are those of the noisy model. Clipping and noise act on the flat
vector of the model's parameters (the official code adds the noise to every state_dict entry,
buffers included).

`info` holds `clip_bound` ρ_t, `norm` ‖w'‖ before clipping and `clipped` (whether it was
clipped). Not a detector (`flagged` is None). The clipping and noise are the `model_clip`
post-aggregation step (`flwbc.postagg.model_clip`), which puts them behind any other rule.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from flwbc.postagg.model_clip import ModelClip, ModelClipOptions
from flwbc.server.base import Aggregate, Aggregator, RoundContext, register_aggregator


@register_aggregator("crfl")
class CRFL(Aggregator):
    """CRFL's training (Xie et al., ICML 2021): FedAvg, then the new model clipped to ρ_t with
    Gaussian noise added (the `model_clip` post-aggregation step, on the server stream)."""

    Options = ModelClipOptions

    def __init__(self, **options: Any) -> None:
        self.smoothing = ModelClip(ModelClipOptions(**options))

    def clip_bound(self, round_: int) -> float:
        """ρ_t for the 1-based round t."""
        return self.smoothing.clip_bound(round_)

    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        mean = weights.to(updates.dtype) @ updates
        update, info = self.smoothing.apply(mean, ctx, ctx.generator)
        return Aggregate(update, info)

"""Lockdown (Huang, Hu, Tu, Liu & Liu, "Lockdown: Backdoor Defense for Federated Learning with
Isolated Subspace Training", NeurIPS 2023; official code github.com/git-disl/Lockdown at
147ec87, `src/agent_sparse.py`): each benign client trains only inside its own sparse subspace,
a 0/1 mask over the parameters that it keeps across rounds, so a backdoor planted in the global
model outside the benign subspaces is dropped, and consensus fusion (the `lockdown_cf` metric)
zeroes the coordinates fewer than θ clients' masks hold.

Per benign client and round, in the official order (agent_sparse.py:105-167):
1. its mask: drawn once (ERK or uniform per-tensor densities of `density`; one mask shared by
   every client with `same_mask`, the default, as the code's single draw; else its own), from
   the stream (seed, "lockdown", "init"[, c]);
2. recovery, from its second training on: the `num_removed` inactive coordinates per tensor of
   largest |gradient| re-activated, the gradient being the sum of the per-batch mean losses'
   gradients over one pass of its data in batches of `screen_batch` (shuffled from the stream
   (seed, "lockdown", t, c), the last partial batch dropped) at its masked weights;
3. local training from the global weights masked before recovery (`start`: a regrown
   coordinate starts from 0, as in the code), each step kept in the recovered subspace
   (`after_step`: the inactive coordinates reset to 0, which with momentum 0, the code's
   optimiser, is SGD on the masked gradient);
4. pruning: per tensor, the ceil(α_t·active) active coordinates of smallest |trained weight|
   dropped, α_t = anneal/2·(1 + cos(πt/T)) with T = `federation.rounds`;
5. it sends mask ⊙ (trained − global), with the pruned mask and the unmasked global weights.
The mask arithmetic is `flwbc.defenses.lockdown_masks`, equal to a transcription of the
official functions. Masks of every client that trained are kept in the checkpoint.

Departures: the code's SGD has weight decay 1e-4, flwbc's local training none; the code's
attackers run Lockdown too (with their poisoned data, and their masks vote in consensus
fusion), while here attackers follow their attack and never defend (a client defense protects
benign clients only), so only benign clients' masks vote; the Flower engine, whose clients are
built afresh, cannot keep masks across rounds and is refused.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from flwbc.client.transform import ClientRun, SGDStep
from flwbc.config import ExperimentConfig
from flwbc.context import ExperimentContext
from flwbc.defenses.base import ClientDefense, register_client_defense
from flwbc.defenses.lockdown_masks import erk_densities, init_masks, prune, prune_rate, regrow
from flwbc.errors import FlwbcError
from flwbc.models import FlatModel
from flwbc.plugin_options import PluginOptions
from flwbc.plugins import registered
from flwbc.rng import torch_generator


class LockdownOptions(PluginOptions):
    """Lockdown's options (`defense.options.lockdown`; the code's options.py defaults)."""

    density: float = Field(
        0.25, gt=0, le=1, description="share of the parameters in a mask (code: dense_ratio)"
    )
    mask_init: Literal["ERK", "uniform"] = Field(
        "ERK", description="per-tensor densities: ERK (RigL's rule, the code's default) or uniform"
    )
    same_mask: bool = Field(
        True, description="every client starts from one shared mask (code default); false: its own"
    )
    anneal: float = Field(
        1e-4,
        ge=0,
        le=1,
        json_schema_extra={"label": True},
        description="α_0, the cosine-annealed share of a mask pruned and regrown each round",
    )
    screen_batch: int = Field(
        64, ge=1, description="batch size of the recovery gradient's pass (code: bs 64)"
    )


@dataclass
class ClientMask:
    """One client's mask [P] (0/1 in the weights' dtype) and, once it trained, the count each
    tensor lost at its last pruning (what its next recovery restores)."""

    mask: Tensor
    removed: dict[str, int] | None = None


@dataclass
class LockdownState:
    """A client's round: its run, the mask it received the global model under (after its last
    pruning: the weights it starts from) and its mask after recovery (the one it trains in)."""

    run: ClientRun
    received: Tensor
    mask: Tensor
    trained: Tensor | None = None
    """The weights after the last local step (what the code prunes on)."""


def _flat(model: FlatModel, named: dict[str, Tensor]) -> Tensor:
    return torch.cat([named[n].reshape(-1) for n in model.names])


def screen_gradient(
    model: FlatModel, w: Tensor, x: Tensor, y: Tensor, batch: int, generator: torch.Generator
) -> Tensor:
    """The sum over one shuffled pass (last partial batch dropped) of the per-batch mean NLL's
    gradient at w (`screen_gradients`, agent_sparse.py:45-62)."""
    order = torch.randperm(len(y), generator=generator).to(x.device)
    total = torch.zeros_like(w)
    for s in range(0, len(y) - batch + 1, batch):
        idx = order[s : s + batch]
        wg = w.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.nll_loss(model(wg, x[idx]), y[idx]), wg)
        total += g
    return total


@register_client_defense("lockdown")
class Lockdown(ClientDefense[LockdownOptions]):
    """Isolated subspace training: each benign client trains and sends inside its own mask,
    pruned and regrown every round."""

    Options = LockdownOptions

    def __init__(self, cfg: ExperimentConfig, options: LockdownOptions | None = None) -> None:
        super().__init__(cfg, options)
        why = registered("engine")[cfg.engine].no_past_models
        if why is not None:
            raise FlwbcError(
                "client defense 'lockdown' keeps every client's mask from round to round, "
                f"which engine {cfg.engine} cannot ({why}); use engine sequential or batched"
            )
        self.masks: dict[int, ClientMask] = {}
        """Every client that trained: its current mask (after its last pruning)."""
        self.round_start: dict[int, Tensor] = {}
        """The masks as the round began (consensus fusion reads these, as the code does)."""
        self._round = 0
        self._lock = threading.Lock()
        self._shared: Tensor | None = None

    def initial_mask(self, exp: ExperimentContext, c: int) -> Tensor:
        """Client c's first mask [P] (the shared one, drawn once, with `same_mask`)."""
        o, model = self.options, exp.model
        shapes = dict(zip(model.names, model.shapes, strict=True))
        densities = erk_densities(shapes, o.density, o.mask_init)
        if o.same_mask and self._shared is not None:
            return self._shared
        key = ("lockdown", "init") if o.same_mask else ("lockdown", "init", c)
        masks = init_masks(shapes, densities, torch_generator(self.cfg.seed, *key), exp.dtype)
        mask = _flat(model, masks).to(exp.device)
        if o.same_mask:
            self._shared = mask
        return mask

    def round_start_mask(self, exp: ExperimentContext, c: int) -> Tensor:
        """Client c's mask [P] as the last round began (its first if it had never trained)."""
        held = self.round_start.get(c)
        if held is None:
            return self.initial_mask(exp, c)
        return held.to(device=exp.device, dtype=exp.dtype)

    def init(self, run: ClientRun) -> LockdownState:
        exp, c = run.exp, run.client
        with self._lock:
            if run.round != self._round:
                self._round = run.round
                self.round_start = {k: v.mask for k, v in self.masks.items()}
        held = self.masks.get(c)
        if held is None:
            received = self.initial_mask(exp, c)
        else:
            received = held.mask.to(device=run.w0.device, dtype=run.w0.dtype)
        mask = received
        if held is not None and held.removed is not None:
            x, y = exp.client_data(c)
            gen = torch_generator(self.cfg.seed, "lockdown", run.round, c)
            batch = self.options.screen_batch
            grad = screen_gradient(exp.model, run.w0 * received, x, y, batch, gen)
            model = exp.model
            mask = _flat(model, regrow(model.unflatten(mask), held.removed, model.unflatten(grad)))
        return LockdownState(run, received, mask)

    def start(self, state: LockdownState, w: Tensor) -> Tensor:
        """The global weights masked before recovery, as the code does (agent_sparse.py:111-117):
        a regrown coordinate starts training from 0."""
        return w * state.received

    def after_step(self, state: LockdownState, s: SGDStep) -> Tensor:
        state.trained = s.w_hat * state.mask
        return state.trained

    def final(self, state: LockdownState, update: Tensor) -> Tensor:
        run = state.run
        model = run.exp.model
        trained = state.trained if state.trained is not None else run.w0 + update
        rate = prune_rate(run.round, self.cfg.federation.rounds, self.options.anneal)
        pruned, removed = prune(model.unflatten(trained), model.unflatten(state.mask), rate)
        mask = _flat(model, pruned)
        with self._lock:
            self.masks[run.client] = ClientMask(mask, removed)
        return mask * update

    def state_dict(self) -> dict[str, Tensor]:
        """Every client that trained: "ids" [n], "masks" [n, P] (0/1 bytes) and, per tensor
        name, "removed/<name>" [n], its count at the client's last pruning."""
        if not self.masks:
            return {}
        ids = sorted(self.masks)
        out = {
            "ids": torch.tensor(ids, dtype=torch.int64),
            "masks": torch.stack([self.masks[c].mask.cpu() for c in ids]).to(torch.uint8),
        }
        for name in self.masks[ids[0]].removed or {}:
            counts = [(self.masks[c].removed or {})[name] for c in ids]
            out[f"removed/{name}"] = torch.tensor(counts, dtype=torch.int64)
        return out

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.masks = {}
        for k, c in enumerate(state.get("ids", torch.zeros(0)).tolist()):
            removed = {
                key.removeprefix("removed/"): int(v[k])
                for key, v in state.items()
                if key.startswith("removed/")
            }
            self.masks[int(c)] = ClientMask(state["masks"][k].float(), removed)

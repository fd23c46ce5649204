"""Lockdown's mask arithmetic (Huang et al., "Lockdown: Backdoor Defense for Federated Learning
with Isolated Subspace Training", NeurIPS 2023; official code github.com/git-disl/Lockdown at
commit 147ec87, files under `src/`): pure, deterministic building blocks of the client defense.

Each client trains only inside its own sparse subspace, a 0/1 mask per parameter tensor:
- `erk_densities` + `init_masks`: the initial mask, ERK (Erdős–Rényi-kernel, as in RigL) or
  uniform per-tensor densities, positions drawn at random (utils.py:341-352, 370-444);
- `prune_rate`: the cosine-annealed fraction alpha_t pruned and regrown each round
  (agent_sparse.py:87; paper eq. 7);
- `prune`: after local training drop the ceil(alpha_t * active) smallest-magnitude active
  coordinates per tensor (agent_sparse.py:85-101);
- `regrow`: before the next local training re-activate as many inactive coordinates, those with
  the largest gradient magnitude (agent_sparse.py:64-75);
- `masked_update`: the update sent, mask ⊙ (trained − global) (agent_sparse.py:159-162;
  paper eq. 5);
- `weighted_mean`: the server's data-size-weighted mean of the updates (aggregation.py:109-117);
- `consensus`: consensus fusion (CF), zero every weight fewer than theta clients' masks hold
  (federated.py:180-187; paper Alg. 1 l.11).

All functions take and return ordered mappings name -> tensor (a model's parameters in
`named_parameters` / `state_dict` order; the order matters for `erk_densities` float sums and
for the random stream of `init_masks`) and never modify their inputs. They reproduce the official
arithmetic exactly (the tests compare them, with `torch.equal`, against a transcription of the
authors' functions); departures are keyword options or stated in the docstring. Ties: the
official code breaks them by `torch.sort` (not stable); `prune`/`regrow` use the same call, so
ties resolve identically on the same device and dtype (the official code sorts on `args.device`,
usually CUDA, where tie order may differ from the CPU's).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

# Scores given to the coordinates a step must not pick (agent_sparse.py:72, 97); the paper's
# Alg. 2 writes 1000 / -1000. A weight (gradient) beyond these in magnitude would tie with them.
PRUNE_SENTINEL = 100000.0
REGROW_SENTINEL = -100000.0


def _frozen(name: str) -> bool:
    """Names the official code never sparsifies: BatchNorm buffers ("running_mean",
    "running_var", "num_batches_tracked"); utils.py:412 and agent_sparse.py:96 at 147ec87."""
    return "running" in name or "track" in name


def erk_densities(
    shapes: Mapping[str, tuple[int, ...]],
    density: float,
    distribution: Literal["ERK", "uniform"] = "ERK",
) -> dict[str, float]:
    """Per-tensor mask densities whose active counts add up to about `density` of all entries
    (`calculate_sparsities`, utils.py:370-444 at 147ec87; the RigL ERK rule; default
    `mask_init="ERK"`, density `dense_ratio=0.25`, options.py:52,65).

    "uniform": every tensor, 1-D ones and BatchNorm buffers included, gets `density` (as
    1 - (1 - density), see below).
    "ERK": tensor l of N_l entries gets eps * score_l with score_l = sum(shape)/prod(shape), so
    large (fully connected) tensors are sparser than small ones. eps solves
    eps * sum_{sparse} score_l*N_l = sum_{sparse} density*N_l - sum_{dense} (1-density)*N_l,
    the dense set starting as the names containing "running"/"track"; while max(score)*eps > 1
    every tensor whose score equals that maximum (exact float equality) joins the dense set and
    eps is solved again. All 1-D tensors (score 1) therefore tend to end dense together.

    Returned densities are `1 - s` with `s` the official sparsity (dense: 1.0), computed with
    the same float operations in the same order, so `int(d * numel)` equals the official
    `int((1 - s) * numel)` bit for bit (`1 - d` is `s` exactly whenever s >= 0.5).
    Departures: an unknown `distribution` raises ValueError (the official returns {}); so does
    an ERK case with no sparse tensor left (the official fails in `np.max([])`) or a zero
    divisor (the official divides to inf/nan).
    """
    if distribution == "uniform":
        # the official keeps s = 1 - density; 1 - s reproduces its rounding
        return {name: 1 - (1 - density) for name in shapes}
    if distribution != "ERK":
        raise ValueError(f"unknown mask distribution {distribution!r} (ERK or uniform)")
    dense: set[str] = set()
    while True:
        rhs = 0.0
        divisor = 0.0
        score: dict[str, float] = {}
        for name, shape in shapes.items():
            if _frozen(name):
                dense.add(name)
            numel = math.prod(shape)
            if name in dense:
                rhs -= numel * (1 - density)
            else:
                rhs += numel * density
                score[name] = sum(shape) / numel
                divisor += score[name] * numel
        if not score:
            raise ValueError("ERK: no tensor left to sparsify (density too high?)")
        if divisor == 0:
            raise ValueError("ERK: every remaining tensor has score 0 (0-dim tensors only?)")
        eps = rhs / divisor
        top = max(score.values())
        if not top * eps > 1:  # as the official test, also for a nan eps
            break
        dense.update(name for name, s in score.items() if s == top)
    return {name: 1.0 if name in dense else 1 - (1 - eps * score[name]) for name in shapes}


def init_masks(
    shapes: Mapping[str, tuple[int, ...]],
    densities: Mapping[str, float],
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Tensor]:
    """Random 0/1 masks with `int(densities[name] * numel)` ones per tensor (truncation), at the
    positions `torch.randperm(numel, generator=generator)[:k]`; tensors are visited in the
    mapping's order and one permutation is drawn per tensor with k > 0 (none when k == 0, one
    also for dense tensors), as `init_masks` does (utils.py:341-352 at 147ec87).

    Departures: the official draws from the global torch RNG (seeded 0 once, federated.py:20)
    and gives each mask its parameter's dtype; here an explicit CPU `generator` (the same
    stream as the global RNG under the same seed) and `dtype` (default float32, the official
    models' dtype). Masks are on the CPU, like the official ones.
    """
    masks: dict[str, Tensor] = {}
    for name, shape in shapes.items():
        numel = math.prod(shape)
        flat = torch.zeros(numel, dtype=dtype)
        k = int(densities[name] * numel)
        if k > 0:
            flat[torch.randperm(numel, generator=generator)[:k]] = 1
        masks[name] = flat.view(shape)
    return masks


def prune_rate(round: int, rounds: int, anneal: float) -> float:
    """The fraction alpha_r of each tensor's active coordinates pruned (and, next round,
    regrown) at round `round` of `rounds` (numbered 1..rounds): cosine annealing
    anneal/2 * (1 + cos(round*pi/rounds)), from ~anneal at round 1 to exactly 0 at the last
    (agent_sparse.py:87 at 147ec87; paper eq. 7 with T_end = T; default anneal 1e-4,
    options.py:54). The official evaluates it with `np.cos`/`np.pi`; `math` gives the same
    float64 value (checked over T < 300; a libm differing in the last ulp could differ).
    """
    return anneal / 2 * (1 + math.cos((round * math.pi) / rounds))


def prune(
    weights: Mapping[str, Tensor], masks: Mapping[str, Tensor], rate: float
) -> tuple[dict[str, Tensor], dict[str, int]]:
    """Magnitude pruning after local training (`fire_mask`, agent_sparse.py:85-101 at 147ec87;
    paper Alg. 2): per mask entry, `num_removed = ceil(rate * sum(mask))`, the sum a tensor in
    the mask's dtype (float32 in the official code, so the product is rounded to float32 before
    the ceil: 13 active at rate 7/13 remove 8, not 7); the `num_removed` active coordinates of
    smallest |weight| (inactive ones scored `PRUNE_SENTINEL`, ascending `torch.sort`) are set to
    0. Names containing "running"/"track" are not pruned but still get a (nonzero) count, as in
    the official code. Dense tensors are pruned too (>= 1 coordinate whenever rate > 0).

    Returns `(new_masks, num_removed)`; `num_removed` is what `regrow` restores next round.
    Departure: the official mutates `masks` in place; here inputs are left untouched and new
    masks returned. `weights` must hold every name of `masks`.
    """
    new_masks: dict[str, Tensor] = {}
    num_removed: dict[str, int] = {}
    for name, mask in masks.items():
        num_removed[name] = math.ceil(rate * torch.sum(mask))
    for name, mask in masks.items():
        new = mask.clone()
        k = num_removed[name]
        if k > 0 and not _frozen(name):
            w = weights[name].detach().to(mask.device)
            score = torch.where(mask > 0, w.abs(), PRUNE_SENTINEL * torch.ones_like(w))
            _, order = torch.sort(score.reshape(-1))
            new.view(-1)[order[:k]] = 0
        new_masks[name] = new
    return new_masks, num_removed


def regrow(
    masks: Mapping[str, Tensor], num_removed: Mapping[str, int], gradients: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Gradient-based recovery before local training (`update_mask`, default branch,
    agent_sparse.py:64-75 at 147ec87; paper Alg. 2 l.14): for every name in `gradients`, the
    `num_removed[name]` inactive coordinates of largest |gradient| (active ones scored
    `REGROW_SENTINEL`, descending `torch.sort`) are set to 1, so each tensor's density returns
    to its value before the previous prune. Names absent from `gradients` (buffers: the
    official gradient covers `named_parameters` only) are returned unchanged.

    `gradients` is the official `screen_gradients` sum over one pass of the client's data at
    the masked weights (not computed here). Not implemented: the `--dis_check_gradient` random
    recovery branch. Departure: the official mutates `masks` in place; here new masks.
    """
    new_masks = {name: mask.clone() for name, mask in masks.items()}
    for name, grad in gradients.items():
        mask = new_masks[name]
        g = grad.detach().to(mask.device)
        score = torch.where(mask == 0, g.abs(), REGROW_SENTINEL * torch.ones_like(g))
        _, order = torch.sort(score.reshape(-1), descending=True)
        mask.view(-1)[order[: num_removed[name]]] = 1
    return new_masks


def masked_update(mask_vec: Tensor, trained_vec: Tensor, global_vec: Tensor) -> Tensor:
    """The update a client sends: `mask_vec * (trained_vec - global_vec)` over the flat state
    (agent_sparse.py:159-162 at 147ec87; paper eq. 5, m_{i,t+1} ⊙ (w_{i,t,K} − w_t)), with the
    post-prune mask and the received, unmasked global weights: a coordinate regrown and kept
    this round sends (0 + its local change) − global, replacing the global value; inactive
    coordinates send 0.
    """
    return mask_vec * (trained_vec - global_vec)


def weighted_mean(updates: Sequence[Tensor], sizes: Sequence[int]) -> Tensor:
    """The server's aggregate with `--aggr avg` (`agg_avg`, aggregation.py:109-117 at 147ec87):
    sum_i n_i*u_i / sum_i n_i, accumulated in client order, with n_i the clients' dataset
    sizes; no per-coordinate normalisation by how many masks hold a coordinate (the paper's
    eq. 5 divides by M, the same under equal sizes). The new global is w + server_lr * this.
    """
    if len(updates) != len(sizes) or not updates:
        raise ValueError("weighted_mean needs one size per update and at least one update")
    total: Tensor | int = 0
    count = 0
    for update, n in zip(updates, sizes, strict=True):
        total = total + n * update
        count += n
    assert isinstance(total, Tensor)
    return total / count


def consensus(
    weights: Mapping[str, Tensor], masks: Sequence[Mapping[str, Tensor]], theta: float
) -> dict[str, Tensor]:
    """Consensus fusion (CF): keep a weight where at least `theta` of the clients' masks hold
    it, zero it elsewhere (federated.py:180-187 at 147ec87; paper Alg. 1 l.11, T_theta); the
    comparison is `>=`. `masks` are ALL clients' masks (attackers and unsampled ones included;
    the official uses those captured at the start of the round); default theta 20 of 40
    (options.py:44).

    Applies to every name in `weights`: pass the model's parameters (the official loops over
    `named_parameters`, leaving buffers as they are). Returns new tensors; the official applies
    CF to an evaluation copy of the global model only, never fed back into training.
    """
    if not masks:
        raise ValueError("consensus needs at least one client's mask")
    out: dict[str, Tensor] = {}
    for name, w in weights.items():
        votes: Tensor | int = 0  # from int 0, as the official: 0/1 masks of any dtype add up
        for client in masks:
            votes = votes + client[name].to(w.device)
        assert isinstance(votes, Tensor)
        out[name] = torch.where(votes >= theta, w, torch.zeros_like(w))
    return out

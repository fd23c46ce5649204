"""FoolsGold (Fung, Yoon & Beschastnikh, RAID 2020, "The Limitations of Federated Learning in
Sybil Settings", Algorithm 1; official code DistributedML/FoolsGold).

Sybils that push the same poisoning objective send updates that point the same way round after
round, while honest clients' (non-IID) updates differ. The server keeps, per client id, the sum
H_i of all the updates it has sent (its history), and each round:

1. cs_ij = cos(H_i, H_j) over the scored clients, with the diagonal set to 0 (the authors'
   `cosine_similarity(grads) - np.eye(n)`), and v_i = max_j cs_ij over that row, the zero
   diagonal included, so v_i ≥ 0 (`self_in_max`);
2. pardoning: cs_ij ← cs_ij · v_i / v_j wherever v_j > v_i (an honest client that merely
   resembles a sybil is not punished for it);
3. α_i = 1 − max_j cs_ij, clipped to [0, 1], then divided by max_i α_i (so the most distinct
   client has 1, set to 0.99 to keep the logit finite);
4. logit: α_i ← κ·(ln(α_i / (1 − α_i)) + 0.5), clipped to [0, 1] (κ = 1, the paper's default);
5. the aggregate is the weighted average Σ α_i Δ_i / Σ α_i of the round's updates Δ_i
   (zero if every α_i is 0).

The FedAvg weights are not used (`rank_based`): α replaces them.

Options:
- `kappa` (1.0): the logit's confidence κ.
- `history_entries` (None): None scores the full updates, as Algorithm 1 does; k scores only
  the last k entries of each update. The official PyTorch code ("deep-fg") keeps the history
  of the output layer's weights only (its "important features" for deep models); with the
  flat layout (parameters in `named_parameters` order) the output layer is the last
  `classes·(hidden + 1)` entries (its weight and bias). Default: the full update, since a rule
  does not know the model's layout and the paper's algorithm is stated on whole updates.
- `self_in_max` (True): v_i is the maximum of row i of cs − I, the zeroed diagonal included,
  as the authors' code computes (`np.max(cs, axis=1)` after subtracting the identity).
  False takes it over j ≠ i only, Algorithm 1 read literally; then a client whose history is
  anti-correlated with every other gets v_i < 0, the pardoning ratio v_i / v_j turns negative
  and flips the sign of its similarities: five correlated histories and one at −3 times their
  direction are weighted [0.96, 1, 1, 0.96, 1, 1] there, [0, 0, 0, 0, 0, 1] by the authors'
  code. Kept to compare with earlier runs (it was the default until December 2026).
- `scope` ("round"): "round" scores the round's clients among themselves (Algorithm 1, where
  every client takes part each round, and the official code); "seen" scores every client seen
  so far and uses the round's clients' weights (sybils need not be sampled together), as the
  official code's per-peer memory variant does.

State: the histories, one [num_seen, P] tensor in the order clients were first seen, and their
ids; `state_dict()` is {"ids": [num_seen] int64, "history": [num_seen, P]} (empty before the
first round), so a resumed run continues identically.

`info["weights"]` is α for the round's rows; `flagged` lists the rows with α = 0 (their update
is excluded from the average).

Deviations: the paper's optional feature-importance weighting of the history (for its softmax
models) is not implemented; the official code divides Σ α_i Δ_i by the number of clients, here
by Σ α_i (a weighted average, so excluding sybils does not shrink the step).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from flwbc.errors import FlwbcError
from flwbc.plugin_options import StrictOptions
from flwbc.server.base import Aggregate, Aggregator, RoundContext, register_aggregator


def foolsgold_weights(history: Tensor, kappa: float = 1.0, self_in_max: bool = True) -> Tensor:
    """FoolsGold's weights α [n] for the histories [n, P] (steps 1-4 of the module docstring;
    `self_in_max` as the option of that name).

    Computed in float64; a zero history has cosine 0 with every other one.
    """
    h = history.to(torch.float64)
    n = h.shape[0]
    norms = h.norm(dim=1, keepdim=True)
    unit = h / torch.where(norms > 0, norms, torch.ones_like(norms))
    cs = unit @ unit.T
    cs = (cs + cs.T) / 2
    cs.fill_diagonal_(0.0)
    if n == 1:
        return h.new_ones(1)
    if self_in_max:
        v = cs.max(dim=1).values
    else:
        v = cs.clone().fill_diagonal_(-math.inf).max(dim=1).values
    # pardoning: row i's similarity to a j with v_j > v_i is scaled by v_i / v_j
    ratio = v.unsqueeze(1) / v.unsqueeze(0)
    pardon = (v.unsqueeze(1) < v.unsqueeze(0)) & (v.unsqueeze(0) != 0)
    cs = torch.where(pardon, cs * ratio, cs)
    alpha = (1 - cs.fill_diagonal_(-math.inf).max(dim=1).values).clamp(0.0, 1.0)
    top = alpha.max()
    if float(top) == 0.0:
        return alpha  # every history points the same way: nobody is trusted
    alpha = alpha / top
    alpha = torch.where(alpha == 1.0, torch.full_like(alpha, 0.99), alpha)
    logit = kappa * (torch.log(alpha / (1 - alpha)) + 0.5)
    logit = torch.nan_to_num(logit, nan=0.0, posinf=1.0, neginf=0.0)
    return logit.clamp(0.0, 1.0)


class FoolsGoldOptions(StrictOptions):
    kappa: float = Field(1.0, gt=0, description="the logit's confidence κ")
    history_entries: int | None = Field(
        None,
        ge=1,
        description="score only the last k entries of each update (None: the whole update)",
    )
    scope: Literal["round", "seen"] = Field(
        "round",
        description="round: score the round's clients among themselves; seen: every client "
        "seen so far",
    )
    self_in_max: bool = Field(
        True,
        description="v_i over the row of cs - I, its zero diagonal included, as the authors' "
        "code (false: over j != i only)",
    )


@register_aggregator("foolsgold")
class FoolsGold(Aggregator):
    rank_based = True
    per_client = True
    Options = FoolsGoldOptions

    def __init__(self, **options: Any) -> None:
        o = FoolsGoldOptions(**options)
        self.kappa = float(o.kappa)
        self.history_entries = o.history_entries
        self.scope = o.scope
        self.self_in_max = o.self_in_max
        self._ids: Tensor | None = None
        self._history: Tensor | None = None

    def _features(self, updates: Tensor) -> Tensor:
        k = self.history_entries
        if k is None:
            return updates
        if k > updates.shape[1]:
            raise FlwbcError(
                f"aggregator '{self.name}': history_entries={k} but the updates have "
                f"{updates.shape[1]} entries"
            )
        return updates[:, -k:]

    def _add_to_history(self, feats: Tensor, client_ids: list[int]) -> Tensor:
        """Add the round's features to the histories; the rows of the round's clients."""
        if self._history is None or self._ids is None:
            self._ids = torch.empty(0, dtype=torch.int64)
            self._history = feats.new_zeros((0, feats.shape[1]))
        elif self._history.shape[1] != feats.shape[1]:
            raise FlwbcError(
                f"aggregator '{self.name}': its saved history has {self._history.shape[1]} "
                f"entries per client but the updates give {feats.shape[1]}"
            )
        history = self._history.to(device=feats.device, dtype=feats.dtype)
        where = {int(c): i for i, c in enumerate(self._ids.tolist())}
        new = [c for c in dict.fromkeys(int(c) for c in client_ids) if c not in where]
        if new:
            for c in new:
                where[c] = len(where)
            self._ids = torch.cat([self._ids, torch.tensor(new, dtype=torch.int64)])
            history = torch.cat([history, history.new_zeros((len(new), history.shape[1]))])
        rows = torch.tensor([where[int(c)] for c in client_ids], device=feats.device)
        history = history.index_add(0, rows, feats)
        self._history = history
        return rows

    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        self.check(updates.shape[0])
        rows = self._add_to_history(self._features(updates), ctx.client_ids)
        assert self._history is not None
        if self.scope == "round":
            alpha = foolsgold_weights(self._history[rows], self.kappa, self.self_in_max)
        else:
            alpha = foolsgold_weights(self._history, self.kappa, self.self_in_max)[rows]
        alpha = alpha.to(device=updates.device)
        total = float(alpha.sum())
        if total == 0.0:
            update = updates.new_zeros(updates.shape[1])
        else:
            update = (alpha / total).to(updates.dtype) @ updates
        flagged = [int(i) for i in torch.nonzero(alpha == 0).flatten().tolist()]
        info = {"weights": [round(float(a), 6) for a in alpha.tolist()]}
        return Aggregate(update, info, flagged=flagged)

    def state_dict(self) -> dict[str, Tensor]:
        if self._history is None or self._ids is None:
            return {}
        return {"ids": self._ids.clone(), "history": self._history.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if "history" in state:
            self._ids = state["ids"].detach().to(torch.int64).clone()
            self._history = state["history"].detach().clone()
        else:
            self._ids = self._history = None

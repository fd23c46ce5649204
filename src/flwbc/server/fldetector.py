"""FLDetector (Zhang, Cao, Jia & Gong, KDD 2022, "FLDetector: Defending Federated Learning
Against Model Poisoning Attacks via Detecting Malicious Clients"; official code
zaixizhang/FLDetector, MXNet).

It assumes that a benign client's updates are consistent over rounds: by the Cauchy mean value
theorem its update at w_t is close to its update at an earlier w_τ plus H·(w_t − w_τ), with H an
integrated Hessian that the server approximates by L-BFGS from the global model's history,
while a poisoning client's crafted updates are not. It needs no known number of attackers and
no root data, but a history per client. Each round t, of n updates Δ_i:

1. the L-BFGS window holds the last N pairs (s_r, y_r) = (w_r − w_{r−1}, Δ̄_r − Δ̄_{r−1}) of
   global-model differences and global-update differences (Δ̄_r the rule's aggregate);
   `lbfgs_hvp` applies the compact L-BFGS matrix B (Byrd, Nocedal & Schnabel 1994: initial
   σI with σ = yᵀs/sᵀs of the newest pair) to a vector, B·v ≈ H·v;
2. prediction: a client whose last update Δ_i^τ was sent in round τ < t (at global model w_τ)
   is predicted to send Δ̂_i = Δ_i^τ + B·(w_t − w_τ); its distance d_i = ‖Δ̂_i − Δ_i‖;
3. the round's distances are normalised over the round's scored clients, d_i / mean_j d_j
   (the paper divides by the sum over all n clients; see the deviations), and appended to the
   client's window of its last N scores; its suspicious score is the window's mean;
4. from round `start_round` on, the gap statistic (Tibshirani et al. 2001; k-means with
   k = 1..7 on the min-max scaled scores against 10 uniform reference sets, the smallest k with
   Gap(k) ≥ Gap(k+1) − s_{k+1}) decides whether attackers are present: k > 1 means yes. Then
   k-means with 2 clusters splits the scores and the cluster with the higher mean score is
   malicious (scikit-learn's `KMeans`, seeded from the round's server stream);
5. the round's rows of malicious clients are excluded and the inner rule (`rule`, with
   `rule_options`) aggregates the others with their FedAvg weights renormalised; rows that
   a detecting inner rule flags are added to `flagged`.

The rule works on updates (client model minus global model, ≈ −η·gradient) rather than the
paper's gradients; B is odd in y (B(s, −y) = −B(s, y)), so the prediction is the same.

Partial participation (flwbc samples clients each round; the paper has every client in every
round): the rule keeps, per client id, its last update, the global model it was computed at,
and its last N scores. A client is scored whenever it has sent an update before, in any
earlier round, by predicting from that update across the gap w_t − w_τ (one round in the
paper's setting); the L-BFGS window is the global history and is always current. A client's
first update has no prediction: it is unscored and never flagged. The scores clustered are
those of every client scored so far (the paper clusters all n clients), and only the round's
rows can be flagged. With full participation this is the paper's procedure.

Options:
- `window` (10, the paper's N): the number of L-BFGS pairs and of scores averaged;
- `start_round` (None: window + 1, once the L-BFGS window can be full; the official code
  warms up 50 rounds): the first round whose scores may flag clients; scores are kept from
  the first round that has a prediction (round 3: one L-BFGS pair and an earlier update);
- `rule` ("median", the official code's default `--aggregation`; the paper also pairs it with
  FedAvg and trimmed mean) and `rule_options` ({}): the rule applied to the kept updates; it
  decides `rank_based` and a root set;
- `gap_refs` (10) and `max_k` (7): the gap statistic's reference sets and largest k, as in
  the official code;
- `gap` ("paper"): Gap(k) = E*[log W*_k] − log W_k, Tibshirani's gap statistic that the paper
  cites; "authors" takes log E*[W*_k] − log W_k, as the official code (`detection1`) does.

State (`state_dict`): "ids" [M] int64, "last_round" [M] int64, "last_update" [M, P],
"last_model" [M, P], "scores" [M, N] float64 (oldest first, NaN where empty), the L-BFGS
window "s" and "y" [m ≤ N, P], "prev_model" and "prev_aggregate" [P]; empty before the first
round, so a resumed run continues identically.

`info` holds the round's scores (null: unscored), `attack_detected`, `gap_k` and the inner
rule's info under `rule`; `flagged` lists the excluded rows (empty when no attack is found).

Deviations: the paper removes the detected clients for good and restarts training from
scratch; here the detection repeats every round and excludes the flagged rows of that round
only (the run goes on). Scores are normalised by the mean over the round's scored clients
rather than by the sum, so rounds with different numbers of scored clients are comparable
(the same up to a factor with full participation; clustering ignores that factor). The gap
uses Tibshirani's E*[log W_k] by default (the official code takes log E*[W_k]: `gap`), only k
up to the number of distinct scores, and k = max_k when no k satisfies the rule (the official
code fails). The official code clusters the sum of each client's last N normalised distances
(the mean here: the same up to the factor N, which min-max scaling and k-means ignore) and
first detects once N scored rounds exist; here scores start in round 3 and flagging in
`start_round`, so with full participation the window is full from round N + 2 on.
Checked against a transcription of the official `detection1`/`detection` and its scoring loop
over several rounds (tests/server/test_authors_code.py).
If fewer updates are kept than the inner rule accepts, nothing is excluded that round.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from flwbc.errors import FlwbcError
from flwbc.plugin_options import StrictOptions
from flwbc.server.base import (
    Aggregate,
    Aggregator,
    RoundContext,
    build_aggregator,
    register_aggregator,
)


def lbfgs_hvp(s: Tensor, y: Tensor, v: Tensor) -> Tensor:
    """The compact L-BFGS approximation B of the Hessian built from the pairs s, y [m, P]
    (oldest first; y_j ≈ H s_j), applied to v [k, P] (rows) or [P]: B·v, in float64.

    B = σI − W M⁻¹ Wᵀ with W = [σS, Y], M = [[σSᵀS, L], [Lᵀ, −D]], L the strictly lower
    triangle and D the diagonal of SᵀY, σ = y_mᵀs_m / s_mᵀs_m: the matrix that m BFGS updates
    from σI produce (Byrd, Nocedal & Schnabel 1994, eq. 2.17)."""
    s64, y64 = s.to(torch.float64), y.to(torch.float64)
    vec = v.to(torch.float64)
    flat = vec.dim() == 1
    rows = vec.unsqueeze(0) if flat else vec
    sy = s64 @ y64.T  # [m, m]: (SᵀY)_ij = s_i·y_j
    ss = s64 @ s64.T
    sigma = float(sy[-1, -1] / ss[-1, -1])
    low = torch.tril(sy, diagonal=-1)
    mat = torch.cat(
        [torch.cat([sigma * ss, low], dim=1), torch.cat([low.T, -torch.diag(sy.diag())], dim=1)]
    )
    w = torch.cat([sigma * s64, y64])  # [2m, P]: the columns of W as rows
    rhs = w @ rows.T
    coef, info = torch.linalg.solve_ex(mat, rhs)
    if int(info) != 0 or not torch.isfinite(coef).all():
        coef = torch.linalg.pinv(mat) @ rhs
    out = sigma * rows - coef.T @ w
    return out[0] if flat else out


def gap_statistic_k(
    scores: np.ndarray,
    seed: int,
    max_k: int = 7,
    refs: int = 10,
    n_init: int = 10,
    gap: str = "paper",
) -> int:
    """The number of clusters the gap statistic picks for 1-D `scores` (min-max scaled to
    [0, 1]): the smallest k with Gap(k) ≥ Gap(k+1) − s_{k+1}, where Gap(k) = E*[log W*_k] −
    log W_k (`gap="paper"`; `"authors"`: log E*[W*_k] − log W_k, as the official code) over
    `refs` uniform [0, 1] reference sets of the same size, W_k the k-means
    within-cluster sum of squares (`n_init` k-means++ starts for the scores, one for each
    reference set, which the mean over the sets smooths), s_k = sd(log W*_k)·√(1 + 1/refs).
    1 when the scores are all equal; k ranges up to min(max_k, distinct scores), and that
    bound is returned when no smaller k satisfies the rule."""
    x = np.asarray(scores, dtype=np.float64).reshape(-1)
    lo, hi = float(x.min()), float(x.max())
    distinct = len(np.unique(x))
    if hi <= lo or distinct < 2:
        return 1
    x = (x - lo) / (hi - lo)
    top = min(max_k, distinct)
    rng = np.random.default_rng(seed)
    ref_sets = rng.uniform(0.0, 1.0, size=(top, refs, len(x)))
    tiny = 1e-12

    from sklearn.cluster import KMeans  # here: importing scikit-learn costs every run 1-2 s

    def within(data: np.ndarray, k: int, starts: int) -> float:
        km = KMeans(n_clusters=k, n_init=starts, random_state=seed).fit(data.reshape(-1, 1))
        return max(float(km.inertia_), tiny)

    gaps, sds = [], []
    for k in range(1, top + 1):
        ref_w = np.array([within(r, k, 1) for r in ref_sets[k - 1]])
        log_ref = np.log(ref_w)
        expected = float(log_ref.mean()) if gap == "paper" else float(np.log(ref_w.mean()))
        gaps.append(expected - np.log(within(x, k, n_init)))
        sds.append(float(log_ref.std()) * np.sqrt(1.0 + 1.0 / refs))
        if k > 1 and gaps[k - 2] >= gaps[k - 1] - sds[k - 1]:
            return k - 1
    return top


def malicious_cluster(scores: np.ndarray, seed: int, n_init: int = 10) -> np.ndarray:
    """Boolean mask of the 2-means cluster of `scores` with the higher mean."""
    from sklearn.cluster import KMeans

    x = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    labels = KMeans(n_clusters=2, n_init=n_init, random_state=seed).fit(x).labels_
    means = [x[labels == c].mean() if np.any(labels == c) else -np.inf for c in (0, 1)]
    return labels == int(np.argmax(means))


class FLDetectorOptions(StrictOptions):
    window: int = Field(10, ge=1, description="L-BFGS pairs kept and scores averaged (N)")
    start_round: int | None = Field(
        None, ge=1, description="first round whose scores may flag clients (None: window + 1)"
    )
    rule: str = Field("median", description="the rule that aggregates the kept updates")
    rule_options: dict[str, Any] | None = Field(None, description="the inner rule's options")
    gap_refs: int = Field(10, ge=1, description="the gap statistic's uniform reference sets")
    max_k: int = Field(7, ge=2, description="the gap statistic's largest number of clusters")
    gap: Literal["paper", "authors"] = Field(
        "paper",
        description="paper: E*[log W_k] - log W_k (Tibshirani); authors: log E*[W_k] - log W_k",
    )


@register_aggregator("fldetector")
class FLDetector(Aggregator):
    per_client = True
    Options = FLDetectorOptions

    def __init__(self, **options: Any) -> None:
        o = FLDetectorOptions(**options)
        if o.rule == "fldetector":
            raise ValueError(f"rule must name another aggregation rule (got {o.rule!r})")
        try:
            self.inner = build_aggregator(o.rule, dict(o.rule_options or {}))
        except FlwbcError as err:
            raise ValueError(f"rule: {err}") from None
        self.window = o.window
        self.start_round = o.window + 1 if o.start_round is None else o.start_round
        self.gap_refs = o.gap_refs
        self.max_k = o.max_k
        self.gap = o.gap
        self.rank_based = self.inner.rank_based  # type: ignore[misc]
        self.root_size = self.inner.root_size
        self._state: dict[str, Tensor] = {}

    def check(self, num_updates: int) -> None:
        self.inner.check(num_updates)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Tensor]:
        state = {k: v.clone() for k, v in self._state.items()}
        inner = self.inner.state_dict()
        state.update({f"rule.{k}": v.clone() for k, v in inner.items()})
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        own = {k: v.detach().clone() for k, v in state.items() if not k.startswith("rule.")}
        for k in ("ids", "last_round"):
            if k in own:
                own[k] = own[k].to(torch.int64)
        self._state = own
        self.inner.load_state_dict(
            {k.removeprefix("rule."): v for k, v in state.items() if k.startswith("rule.")}
        )

    def _client_rows(self, ids: list[int], like: Tensor) -> Tensor:
        """Rows of the round's clients in the per-client state, adding new clients."""
        st = self._state
        p = like.shape[1]
        if "ids" not in st:
            st["ids"] = torch.empty(0, dtype=torch.int64)
            st["last_round"] = torch.empty(0, dtype=torch.int64)
            st["last_update"] = like.new_zeros((0, p))
            st["last_model"] = like.new_zeros((0, p))
            st["scores"] = torch.empty((0, self.window), dtype=torch.float64)
        elif st["last_update"].shape[1] != p:
            raise FlwbcError(
                f"aggregator '{self.name}': its saved history has {st['last_update'].shape[1]} "
                f"entries per client but the updates give {p}"
            )
        if st["scores"].shape[1] != self.window:
            raise FlwbcError(
                f"aggregator '{self.name}': its saved scores have a window of "
                f"{st['scores'].shape[1]} but window={self.window}"
            )
        where = {int(c): i for i, c in enumerate(st["ids"].tolist())}
        new = [c for c in dict.fromkeys(int(c) for c in ids) if c not in where]
        if new:
            for c in new:
                where[c] = len(where)
            k = len(new)
            st["ids"] = torch.cat([st["ids"], torch.tensor(new, dtype=torch.int64)])
            st["last_round"] = torch.cat([st["last_round"], torch.full((k,), -1)])
            for key in ("last_update", "last_model"):
                st[key] = torch.cat([st[key], st[key].new_zeros((k, p))])
            st["scores"] = torch.cat(
                [st["scores"], torch.full((k, self.window), float("nan"), dtype=torch.float64)]
            )
        return torch.tensor([where[int(c)] for c in ids], dtype=torch.int64)

    # ------------------------------------------------------------------ a round

    def _distances(self, rows: Tensor, updates: Tensor, w: Tensor) -> Tensor:
        """d_i for the round's rows (NaN where there is no prediction)."""
        st = self._state
        n = updates.shape[0]
        dist = torch.full((n,), float("nan"), dtype=torch.float64)
        if "s" not in st or st["s"].shape[0] == 0 or float(st["s"][-1].norm()) == 0.0:
            return dist
        seen = st["last_round"][rows] >= 0
        idx = torch.nonzero(seen).flatten()
        if idx.numel() == 0:
            return dist
        dev = updates.device
        crow = rows[idx]
        last_u = st["last_update"][crow].to(device=dev, dtype=torch.float64)
        last_w = st["last_model"][crow].to(device=dev, dtype=torch.float64)
        v = w.to(torch.float64).unsqueeze(0) - last_w
        hv = lbfgs_hvp(st["s"].to(dev), st["y"].to(dev), v)
        pred = last_u + hv
        d = (pred - updates[idx].to(torch.float64)).norm(dim=1)
        dist[idx] = d.cpu()
        return dist

    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        n = updates.shape[0]
        self.check(n)
        if len(ctx.client_ids) != n:
            raise FlwbcError(
                f"aggregator '{self.name}' needs one update per client "
                f"({n} rows, {len(ctx.client_ids)} clients)"
            )
        w = ctx.global_weights.detach()
        rows = self._client_rows(list(ctx.client_ids), updates.detach())
        st = self._state

        # scores of the round's clients that have a prediction
        dist = self._distances(rows, updates.detach(), w)
        scored = torch.isfinite(dist)
        round_scores = torch.full((n,), float("nan"), dtype=torch.float64)
        if bool(scored.any()):
            mean = float(dist[scored].mean())
            norm = dist[scored] / mean if mean > 0 else torch.ones_like(dist[scored])
            round_scores[scored] = norm
            srows = rows[scored]
            st["scores"][srows] = torch.cat([st["scores"][srows, 1:], norm.unsqueeze(1)], dim=1)

        # detection over every client with a score
        seed = int(
            torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator, device=ctx.generator.device)
        )
        detected, gap_k, flagged = False, None, []
        window_scores = st["scores"]
        has = ~torch.isnan(window_scores).all(dim=1)
        if ctx.round >= self.start_round and int(has.sum()) >= 2:
            avg = torch.nanmean(window_scores[has], dim=1).numpy()
            gap_k = gap_statistic_k(avg, seed, self.max_k, self.gap_refs, gap=self.gap)
            if gap_k > 1:
                detected = True
                bad = malicious_cluster(avg, seed)
                bad_ids = set(st["ids"][has][torch.from_numpy(bad)].tolist())
                flagged = [i for i, c in enumerate(ctx.client_ids) if int(c) in bad_ids]
        kept = [i for i in range(n) if i not in set(flagged)]
        if flagged:
            try:
                self.inner.check(len(kept))
            except FlwbcError:
                kept, flagged = list(range(n)), []

        sub_w = weights[kept]
        total = float(sub_w.sum())
        sub_w = sub_w / total if total > 0 else torch.full_like(sub_w, 1.0 / len(kept))
        sub_ctx = RoundContext(
            round=ctx.round,
            client_ids=[ctx.client_ids[i] for i in kept],
            generator=ctx.generator,
            global_weights=ctx.global_weights,
            reference_update=ctx.reference_update,
        )
        inner = self.inner.aggregate(updates[kept], sub_w, sub_ctx)
        agg = inner.update.detach()

        # history: the L-BFGS pair of this round, then each client's last update
        if "prev_model" in st:
            s_new = (w - st["prev_model"].to(w.device)).to(updates.dtype).cpu().unsqueeze(0)
            y_new = (agg - st["prev_aggregate"].to(agg.device)).to(updates.dtype)
            y_new = y_new.cpu().unsqueeze(0)
            st["s"] = torch.cat([st.get("s", s_new[:0]), s_new])[-self.window :]
            st["y"] = torch.cat([st.get("y", y_new[:0]), y_new])[-self.window :]
        st["prev_model"] = w.to(updates.dtype).cpu().clone()
        st["prev_aggregate"] = agg.to(updates.dtype).cpu().clone()
        st["last_update"][rows] = updates.detach().to(st["last_update"].dtype).cpu()
        st["last_model"][rows] = w.to(st["last_model"].dtype).cpu().unsqueeze(0)
        st["last_round"][rows] = int(ctx.round)

        info: dict[str, Any] = {
            "scores": [
                None if not bool(scored[i]) else round(float(round_scores[i]), 6) for i in range(n)
            ],
            "attack_detected": detected,
            "gap_k": gap_k,
        }
        if inner.info:
            info["rule"] = inner.info
        if inner.flagged:
            flagged = sorted(set(flagged) | {kept[j] for j in inner.flagged})
        return Aggregate(inner.update, info, flagged=flagged)

"""Where the attackers' values fall among the benign clients' in each coordinate: the order
statistics behind a coordinate-wise rule's verdict.

The FL-WBC + median finding (results/FINDINGS.md) was explained by a mechanism nobody had
observed: FL-WBC's noise spreads the benign values of each coordinate, while the attackers'
consistent values end up in the middle, where the coordinate-wise median picks them. This
replays a run along its own trajectory (as `flwbc compare-rules` does) and, in every round, for
a sample of coordinates drawn from the stream (seed, "order-stats", t), measures on the client
updates the rule receives (a colluding attack's crafted rows included; before any pre-aggregation
step):

- `attacker_in_middle`: the share of coordinates where an attacker's value is one of the values
  the median takes (the middle one for an odd count, either middle one for an even count, as
  `flwbc.server.median.coordinate_median`), against `attacker_in_middle_null`, that share if
  the attackers' values were exchangeable with the benign ones: 1 − C(K−m, s)/C(K, s);
- `attacker_quantile_*`: each attacker value's quantile among the benign values of its
  coordinate (the share below it, ties counting half): its mean and a 10-bin histogram;
- `benign_spread_median`: the median over coordinates of the benign values' standard deviation;
- `attacker_z_median`: the median of |attacker value − benign median| / benign spread;
- `median_shift_z_median`: the median of |median of all − median of benign| / benign spread.

Medians over coordinates are numpy's (the mean of the two middle values for an even count).
Ties are broken by client order (a stable sort).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from flwbc.analysis.replay import replay_start
from flwbc.config import ExperimentConfig, load_run_config
from flwbc.engine import replay_engine
from flwbc.errors import FlwbcError
from flwbc.rng import torch_generator
from flwbc.round import aggregate_round
from flwbc.runio import JsonlLog, atomic_write_bytes, partial_jsonl
from flwbc.server.median import coordinate_median

BINS = 10
"""Bins of the attackers' quantile histogram, equal widths on [0, 1]."""


def _median(x: Tensor) -> float:
    """The median of all of `x`'s values (the mean of the two middle ones for an even count)."""
    return float(coordinate_median(x.reshape(-1, 1))[0])


def middle_positions(k: int) -> tuple[int, ...]:
    """The sorted positions (0-based) whose values a coordinate-wise median of k values takes."""
    return (k // 2,) if k % 2 else (k // 2 - 1, k // 2)


def null_middle_probability(k: int, m: int) -> float:
    """The chance that one of m attackers holds a value the median takes, if all k values of a
    coordinate were exchangeable (their order uniformly random): 1 − C(k−m, s)/C(k, s)."""
    s = len(middle_positions(k))
    return 1.0 - math.comb(k - m, s) / math.comb(k, s)


def order_statistics(updates: Tensor, malicious: Sequence[bool], coords: Tensor) -> dict[str, Any]:
    """The statistics above for the columns `coords` of `updates` [K, P], rows flagged by
    `malicious`; only `benign_spread_median` in a round without attackers."""
    k, m = updates.shape[0], int(sum(malicious))
    if k < 2 or k - m < 2:
        raise FlwbcError(f"order statistics need at least 2 benign updates (got {k - m} of {k})")
    sub = updates[:, coords].double()
    mal = torch.tensor(list(malicious), dtype=torch.bool)
    benign = sub[~mal]
    spread = benign.std(dim=0)
    out: dict[str, Any] = {
        "clients": k,
        "attackers": m,
        "coords": len(coords),
        "benign_spread_median": _median(spread),
    }
    if m == 0:
        return out
    attackers = sub[mal]
    order = sub.argsort(dim=0, stable=True)
    in_middle = mal[order[list(middle_positions(k))]].any(dim=0)
    below = (benign[None] < attackers[:, None]).sum(dim=1)
    ties = (benign[None] == attackers[:, None]).sum(dim=1)
    quantile = (below.double() + 0.5 * ties.double()) / benign.shape[0]
    bins = (quantile * BINS).floor().clamp(max=BINS - 1).long().flatten()
    hist = torch.bincount(bins, minlength=BINS).double() / bins.numel()
    bmed = coordinate_median(benign)
    ok = spread > 0
    z = ((attackers - bmed).abs() / spread)[:, ok]
    shift = (coordinate_median(sub) - bmed).abs()[ok] / spread[ok]
    out |= {
        "attacker_in_middle": float(in_middle.double().mean()),
        "attacker_in_middle_null": null_middle_probability(k, m),
        "attacker_quantile_mean": float(quantile.mean()),
        "attacker_quantile_hist": [float(h) for h in hist],
        "attacker_z_median": _median(z) if z.numel() else None,
        "median_shift_z_median": _median(shift) if shift.numel() else None,
    }
    return out


def _observer(
    into: list[dict[str, Any]], malicious: Sequence[bool], coords: Tensor
) -> Callable[[Tensor], None]:
    """`aggregate_round`'s `received` hook: the order statistics of the updates as the server
    receives them, taken at once (before any step could change them)."""
    return lambda received: into.append(order_statistics(received.cpu(), malicious, coords))


def order_statistics_replay(
    cfg: ExperimentConfig,
    *,
    rounds: int | None = None,
    coords: int = 1000,
    log: JsonlLog | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Replay the run of `cfg` for `rounds` rounds (default: all) and return one record per
    round: `round`, `adversarial` and `order_statistics` of `coords` coordinates (all when
    fewer)."""
    total = rounds or cfg.federation.rounds
    if not 1 <= total <= cfg.federation.rounds:
        raise FlwbcError(f"rounds must be 1..{cfg.federation.rounds} (the run's), got {total}")
    if coords < 1:
        raise FlwbcError(f"coords must be positive, got {coords}")
    exp, w = replay_start(cfg)
    engine = replay_engine(cfg.engine)
    records: list[dict[str, Any]] = []
    for t in tqdm(range(1, total + 1), disable=not progress, desc="order stats", unit="round"):
        plan = exp.round_plan(t)
        u = engine.round_updates(exp, plan, w)
        p = u.updates.shape[1]
        gen = torch_generator(cfg.seed, "order-stats", t)
        picked = torch.randperm(p, generator=gen)[: min(coords, p)].sort().values
        seen: list[dict[str, Any]] = []
        observe = _observer(seen, plan.malicious, picked)
        w = aggregate_round(exp, plan, w, u.updates, u.mean_loss, u.stats, observe).weights
        rec = {"round": t, "adversarial": plan.adversarial} | seen[0]
        records.append(rec)
        if log is not None:
            log.write(rec)
    return records


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the rounds with attackers of every scalar statistic, and their count."""
    attacked = [r for r in records if r.get("attackers")]
    keys = [
        "attacker_in_middle",
        "attacker_in_middle_null",
        "attacker_quantile_mean",
        "attacker_z_median",
        "median_shift_z_median",
        "benign_spread_median",
    ]
    out: dict[str, Any] = {"rounds_with_attackers": len(attacked)}
    for key in keys:
        vals = [r[key] for r in attacked if r.get(key) is not None]
        out[key] = sum(vals) / len(vals) if vals else None
    return out


def order_statistics_run(
    run_dir: str | Path, *, rounds: int | None = None, coords: int = 1000, progress: bool = True
) -> tuple[Path, dict[str, Any]]:
    """Write `order_stats.jsonl` (a record per round; `.partial` while it runs) and
    `order_stats.json` (the summary) into the run directory; a failed or interrupted call leaves
    earlier results in place (`runio.partial_jsonl`)."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    if not cfg.attack.enabled:
        raise FlwbcError(f"{run_dir}: the run has no attack (attack.enabled is false)")
    path = run_dir / "order_stats.jsonl"
    with partial_jsonl(path) as log:
        records = order_statistics_replay(
            cfg, rounds=rounds, coords=coords, log=log, progress=progress
        )
    summary = summarize(records) | {"coords": coords, "rounds": len(records)}
    atomic_write_bytes(run_dir / "order_stats.json", json.dumps(summary, indent=1).encode())
    return path, summary

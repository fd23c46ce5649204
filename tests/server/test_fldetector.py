"""FLDetector: the compact L-BFGS product against dense BFGS and a known Hessian, detection of
clients whose updates are inconsistent with their history, the gap statistic on benign scores,
partial participation, resume, bad options and an end-to-end run with both engines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import flwbc
from flwbc.errors import FlwbcError
from flwbc.server import Aggregate, Aggregator, RoundContext, build_aggregator
from flwbc.server.fldetector import gap_statistic_k, lbfgs_hvp, malicious_cluster

# ---------------------------------------------------------------- L-BFGS


def _spd(p: int, seed: int) -> np.ndarray:
    q = np.random.default_rng(seed).normal(size=(p, p))
    return q @ q.T / p + np.eye(p)


def _dense_bfgs(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """B from m BFGS updates of σI (σ = yᵀs/sᵀs of the newest pair), pair by pair."""
    p = s.shape[1]
    b = (y[-1] @ s[-1]) / (s[-1] @ s[-1]) * np.eye(p)
    for si, yi in zip(s, y, strict=True):
        bs = b @ si
        b = b - np.outer(bs, bs) / (si @ bs) + np.outer(yi, yi) / (yi @ si)
    return b


def _cg_steps(a: np.ndarray, m: int, seed: int) -> np.ndarray:
    """m conjugate-gradient steps s_j on f(w) = ½wᵀAw (A-conjugate: s_iᵀAs_j = 0)."""
    w = np.random.default_rng(seed).normal(size=a.shape[0])
    r = -(a @ w)
    d = r.copy()
    steps = []
    for _ in range(m):
        alpha = (r @ r) / (d @ a @ d)
        steps.append(alpha * d)
        r_new = r - alpha * (a @ d)
        d = r_new + (r_new @ r_new) / (r @ r) * d
        r = r_new
    return np.array(steps)


def test_lbfgs_equals_dense_bfgs_and_reproduces_the_hessian() -> None:
    p, m = 12, 5
    a = _spd(p, 0)
    rng = np.random.default_rng(1)
    # any pairs: the compact form is the dense BFGS recursion; the newest secant holds
    s = rng.normal(size=(m, p))
    y = s @ a  # exact gradient differences of ½wᵀAw: y_j = A s_j
    v = rng.normal(size=(3, p))
    got = lbfgs_hvp(torch.from_numpy(s), torch.from_numpy(y), torch.from_numpy(v)).numpy()
    np.testing.assert_allclose(got, v @ _dense_bfgs(s, y).T, rtol=1e-9, atol=1e-10)
    one = lbfgs_hvp(torch.from_numpy(s), torch.from_numpy(y), torch.from_numpy(s[-1]))
    np.testing.assert_allclose(one.numpy(), a @ s[-1], rtol=1e-9, atol=1e-10)
    # odd in y: updates (≈ −η·gradient) give the same prediction as gradients
    neg = lbfgs_hvp(torch.from_numpy(s), torch.from_numpy(-y), torch.from_numpy(v)).numpy()
    np.testing.assert_allclose(neg, -got, rtol=1e-9, atol=1e-10)
    # pairs from exact line searches (CG steps) on the quadratic: B·v = A·v on their span
    s = _cg_steps(a, m, seed=2)
    y = s @ a
    coeffs = rng.normal(size=(4, m))
    v = coeffs @ s
    got = lbfgs_hvp(torch.from_numpy(s), torch.from_numpy(y), torch.from_numpy(v)).numpy()
    np.testing.assert_allclose(got, v @ a.T, rtol=1e-8, atol=1e-9)
    # p such pairs span everything: B = A
    s = _cg_steps(a, p, seed=3)
    eye = lbfgs_hvp(torch.from_numpy(s), torch.from_numpy(s @ a), torch.eye(p, dtype=torch.float64))
    np.testing.assert_allclose(eye.numpy(), a, rtol=1e-7, atol=1e-8)


# ---------------------------------------------------------------- synthetic federations


def _ctx(rnd: int, ids: list[int], w: torch.Tensor, seed: int = 0) -> RoundContext:
    return RoundContext(
        round=rnd,
        client_ids=ids,
        generator=torch.Generator().manual_seed(1000 * seed + rnd),
        global_weights=w,
    )


def _federation(
    agg: Aggregator,
    rounds: int,
    attackers: tuple[int, ...] = (7, 8, 9),
    attack_from: int = 3,
    per_round: int = 10,
    seed: int = 0,
    p: int = 20,
    start: int = 1,
    w0: torch.Tensor | None = None,
) -> tuple[list[tuple[list[int], Aggregate]], torch.Tensor]:
    """10 clients with quadratic losses ½(w − c_i)ᵀA(w − c_i): benign updates −ηA(w − c_i) plus
    small noise; attackers add ±offset_i with the sign alternating by round (inconsistent with
    their history). Rounds `start`..`start + rounds − 1`; each samples `per_round` clients."""
    rng = np.random.default_rng(seed)
    a = _spd(p, seed + 10)
    centres = rng.normal(size=(10, p))
    offsets = rng.normal(size=(10, p))
    offsets /= np.linalg.norm(offsets, axis=1, keepdims=True)
    w = torch.from_numpy(rng.normal(size=p) * 3) if w0 is None else w0
    out = []
    for rnd in range(start, start + rounds):
        # the federation's own stream, so a resumed run sees the same rounds
        r2 = np.random.default_rng([seed, rnd])
        ids = sorted(r2.choice(10, size=per_round, replace=False).tolist())
        rows = []
        for c in ids:
            u = -0.1 * a @ (w.numpy() - centres[c]) + 0.005 * r2.normal(size=p)
            if c in attackers and rnd >= attack_from:
                u = u + (-1) ** rnd * offsets[c]
            rows.append(u)
        x = torch.from_numpy(np.array(rows))
        res = agg.aggregate(x, torch.full((len(ids),), 1.0 / len(ids)), _ctx(rnd, ids, w, seed))
        json.dumps(res.info)
        out.append((ids, res))
        w = w + res.update
    return out, w


def test_flags_the_clients_inconsistent_with_their_history() -> None:
    agg = build_aggregator("fldetector", {"window": 4})  # detection from round 5
    rounds, _ = _federation(agg, rounds=8)
    for rnd, (_, res) in enumerate(rounds, start=1):
        # round 1: no history; round 2: no L-BFGS pair yet
        assert all(s is None for s in res.info["scores"]) == (rnd < 3)
        if rnd < 5:
            assert res.flagged == [] and res.info["gap_k"] is None
        else:
            assert res.info["attack_detected"] and res.flagged == [7, 8, 9], rnd
        if rnd >= 3:
            scores = res.info["scores"]
            assert min(scores[7:]) > 3 * max(scores[:7]), rnd
    # the kept updates are aggregated by the inner rule (median by default)
    median = build_aggregator("fldetector", {"window": 4, "rule": "fedavg"})
    for rnd, (_, res) in enumerate(_federation(median, rounds=6)[0], start=1):
        assert res.flagged == ([7, 8, 9] if rnd >= 5 else []), rnd


def test_no_attack_on_benign_data() -> None:
    for n in (10, 30):
        for seed in range(3):
            benign = np.abs(1 + 0.2 * np.random.default_rng(seed).normal(size=n))
            assert gap_statistic_k(benign, seed) == 1, (n, seed)
    assert gap_statistic_k(np.ones(10), 0) == 1
    two = np.r_[np.full(7, 0.6), np.full(3, 2.0)] + 0.01 * np.arange(10)
    assert gap_statistic_k(two, 0) > 1
    assert malicious_cluster(two, 0).tolist() == [False] * 7 + [True] * 3
    # the rule on a benign federation: with only 10 clients the gap statistic has a few per
    # cent false alarms per round (each its own draw), so most rounds find no attack
    agg = build_aggregator("fldetector", {"window": 3, "start_round": 1})
    rounds, w = _federation(agg, rounds=9, attackers=())
    found = [res.info["attack_detected"] for _, res in rounds[2:]]
    assert sum(found) <= 2, found
    assert all(res.flagged == [] for _, res in rounds if not res.info["attack_detected"])
    assert torch.isfinite(w).all()


def test_partial_participation_scores_only_returning_clients() -> None:
    # 6 of 10 clients per round: a client is scored from its last update, however old; its
    # first update is unscored and never flagged. (Predictions across several rounds are
    # rougher, so benign stale clients score higher: detection is weaker than with full
    # participation, and this test checks the bookkeeping, not accuracy.)
    agg = build_aggregator("fldetector", {"window": 4, "start_round": 4})
    rounds, _ = _federation(agg, rounds=8, per_round=6, seed=3)
    seen: set[int] = set()
    for rnd, (ids, res) in enumerate(rounds, start=1):
        scores = res.info["scores"]
        for i, c in enumerate(ids):
            assert (scores[i] is None) == (c not in seen or rnd < 3), (rnd, c)
        assert all(scores[i] is not None for i in res.flagged)
        seen |= set(ids)
    state = agg.state_dict()
    assert sorted(state["ids"].tolist()) == list(range(10))
    assert state["last_update"].shape == state["last_model"].shape == (10, 20)
    assert state["scores"].shape == (10, 4) and state["s"].shape == state["y"].shape == (4, 20)


@pytest.mark.parametrize("rule", ["median", "foolsgold"])
def test_resumes_exactly(rule: str) -> None:
    opts = {"window": 3, "start_round": 3, "rule": rule}
    whole = build_aggregator("fldetector", opts)
    full, _ = _federation(whole, rounds=7, per_round=7, seed=5)
    first = build_aggregator("fldetector", opts)
    assert first.state_dict() == {}
    _, w = _federation(first, rounds=4, per_round=7, seed=5)
    state = first.state_dict()
    if rule == "foolsgold":
        assert "rule.history" in state
    resumed = build_aggregator("fldetector", opts)
    resumed.load_state_dict({k: v.clone() for k, v in state.items()})
    # the same later rounds, from the model the first half reached
    tail, _ = _federation(resumed, rounds=3, per_round=7, seed=5, start=5, w0=w)
    assert any(res.flagged for _, res in full[4:])
    for (ids_a, a), (ids_b, b) in zip(full[4:], tail, strict=True):
        assert ids_a == ids_b
        assert torch.equal(a.update, b.update) and a.info == b.info and a.flagged == b.flagged


def test_bad_options_say_so_in_one_line() -> None:
    for options in [
        {"window": 0},
        {"start_round": 0},
        {"rule": "fldetector"},
        {"rule": "nope"},
        {"rule": "krum", "rule_options": {"f": "x"}},
        {"gap_refs": 0},
        {"max_k": 1},
        {"threshold": 1},
    ]:
        with pytest.raises(FlwbcError) as err:
            build_aggregator("fldetector", options)
        assert "\n" not in str(err.value) and "fldetector" in str(err.value), options
    agg = build_aggregator("fldetector", {"rule": "krum", "rule_options": {"f": 2}})
    with pytest.raises(FlwbcError, match="krum"):
        agg.check(5)
    assert build_aggregator("fldetector").rank_based
    assert not build_aggregator("fldetector", {"rule": "fedavg"}).rank_based


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["sequential", "batched"])
def test_detection_is_recorded_end_to_end(real_data_dir: Path, tmp_path: Path, engine: str) -> None:
    cfg = flwbc.make_config(
        {
            "seed": 5,
            "engine": engine,
            "model": "mlp",
            "data": {"dir": str(real_data_dir), "train_fraction": 0.02},
            "federation": {"num_clients": 15, "clients_per_round": 12, "rounds": 4},
            "local": {"epochs": 1, "batch_size": 32},
            "attack": {"name": "sign_flip", "num_malicious": 3, "rounds": [2, 3, 4]},
            "server": {
                "aggregator": "fldetector",
                "options": {"window": 2, "start_round": 3},
            },
            "output": {"dir": str(tmp_path), "name": f"fldetector-{engine}"},
        }
    )
    res = flwbc.run(cfg, progress=False)
    lines = (res.run_dir / "rounds.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 4
    for r in records:
        d = r["detection"]
        assert d["tp"] + d["fp"] == len(d["flagged"])
        assert d["tp"] + d["fp"] + d["fn"] + d["tn"] == len(r["clients"])
        scores = r["aggregator"]["scores"]
        assert all(s is None for s in scores) == (r["round"] < 3)
    assert len(records[0]["malicious"]) == 0 < len(records[-1]["malicious"])
    summary = json.loads((res.run_dir / "summary.json").read_text())
    assert summary["detection"]["tp"] == sum(r["detection"]["tp"] for r in records)
    assert torch.isfinite(res.weights).all()

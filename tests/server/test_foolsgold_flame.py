"""FoolsGold and FLAME against references written here (numpy loops, sklearn run directly), the
detection record (`Aggregate.flagged` → the round's `detection`, the summary's sums) and an
end-to-end run on real data with both in-process engines."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.cluster import HDBSCAN
from sklearn.metrics.pairwise import cosine_distances
from torch import Tensor

import flwbc
from flwbc.api import _summary
from flwbc.errors import FlwbcError
from flwbc.experiment import RoundPlan
from flwbc.round import aggregate_round, detection_record
from flwbc.server import Aggregate, Aggregator, RoundContext, build_aggregator

from .test_authors_code import _foolsgold_authors as _foolsgold_ref


def _ctx(ids: list[int], p: int, seed: int = 0) -> RoundContext:
    return RoundContext(
        round=1,
        client_ids=ids,
        generator=torch.Generator().manual_seed(seed),
        global_weights=torch.zeros(p, dtype=torch.float64),
    )


def _aggregate(agg: Aggregator, x: np.ndarray, ids: list[int], seed: int = 0) -> Aggregate:
    k, p = x.shape
    out = agg.aggregate(
        torch.from_numpy(x), torch.full((k,), 1.0 / k, dtype=torch.float64), _ctx(ids, p, seed)
    )
    json.dumps(out.info)
    return out


# ---------------------------------------------------------------- FoolsGold


def _sybil_rounds(rounds: int, seed: int = 0, p: int = 40):
    """Rounds of (client ids, updates): 7 honest clients with their own direction plus noise,
    3 sybils (ids 7-9) sending nearly the same update; each round 8 of the 10 take part."""
    rng = np.random.default_rng(seed)
    own = rng.normal(size=(10, p))
    poison = rng.normal(size=p) * 2
    out = []
    for _ in range(rounds):
        ids = sorted(rng.choice(10, size=8, replace=False).tolist())
        if sum(c >= 7 for c in ids) < 2:
            ids = sorted(set(ids[:6]) | {7, 8})
        rows = [
            poison + 1e-3 * rng.normal(size=p) if c >= 7 else own[c] + 0.8 * rng.normal(size=p)
            for c in ids
        ]
        out.append((ids, np.array(rows)))
    return out


def test_foolsgold_matches_the_reference_and_silences_sybils() -> None:
    agg = build_aggregator("foolsgold")
    history: dict[int, np.ndarray] = {}
    for ids, x in _sybil_rounds(5):
        out = _aggregate(agg, x, ids)
        for c, row in zip(ids, x, strict=True):
            history[c] = history.get(c, 0) + row
        ref = _foolsgold_ref(np.array([history[c] for c in ids]))
        np.testing.assert_allclose(out.info["weights"], ref, atol=1e-6)
        sybil = [i for i, c in enumerate(ids) if c >= 7]
        honest = [i for i, c in enumerate(ids) if c < 7]
        assert all(out.info["weights"][i] < 1e-3 for i in sybil)
        assert all(out.info["weights"][i] > 0.5 for i in honest)
        assert out.flagged == sybil
        expected = ref @ x / ref.sum()
        np.testing.assert_allclose(out.update.numpy(), expected, rtol=1e-5, atol=1e-8)


def test_foolsgold_history_entries_and_seen_scope() -> None:
    rounds = _sybil_rounds(3, seed=1)
    last = build_aggregator("foolsgold", {"history_entries": 10})
    seen = build_aggregator("foolsgold", {"scope": "seen", "kappa": 2.0})
    hist: dict[int, np.ndarray] = {}
    for ids, x in rounds:
        out_last = _aggregate(last, x, ids)
        out_seen = _aggregate(seen, x, ids)
        for c, row in zip(ids, x, strict=True):
            hist[c] = hist.get(c, 0) + row
        tail = np.array([hist[c][-10:] for c in ids])
        np.testing.assert_allclose(out_last.info["weights"], _foolsgold_ref(tail), atol=1e-6)
        everyone = sorted(hist)  # first-seen order does not change the weights
        ref = _foolsgold_ref(np.array([hist[c] for c in everyone]), kappa=2.0)
        want = [ref[everyone.index(c)] for c in ids]
        np.testing.assert_allclose(out_seen.info["weights"], want, atol=1e-6)


@pytest.mark.parametrize("scope", ["round", "seen"])
def test_foolsgold_resumes_exactly(scope: str) -> None:
    rounds = _sybil_rounds(6, seed=2)
    whole = build_aggregator("foolsgold", {"scope": scope})
    first = build_aggregator("foolsgold", {"scope": scope})
    assert first.state_dict() == {}
    for ids, x in rounds[:3]:
        _aggregate(whole, x, ids)
        _aggregate(first, x, ids)
    state = first.state_dict()
    assert state["history"].shape == (len(state["ids"]), 40)
    resumed = build_aggregator("foolsgold", {"scope": scope})
    resumed.load_state_dict({k: v.clone() for k, v in state.items()})
    for ids, x in rounds[3:]:
        a, b = _aggregate(whole, x, ids), _aggregate(resumed, x, ids)
        assert torch.equal(a.update, b.update) and a.info == b.info and a.flagged == b.flagged


# ---------------------------------------------------------------- FLAME


def _flame_set(seed: int = 0, p: int = 30) -> np.ndarray:
    """7 benign updates around one direction, 3 attackers around another, varied norms."""
    rng = np.random.default_rng(seed)
    benign_dir, bad_dir = rng.normal(size=p), rng.normal(size=p)
    benign = benign_dir + 0.1 * rng.normal(size=(7, p))
    bad = bad_dir + 0.1 * rng.normal(size=(3, p))
    scales = rng.uniform(0.5, 3.0, size=(10, 1))
    return np.vstack([benign, bad]) * scales


def test_flame_excludes_the_attackers_as_sklearn_does() -> None:
    x = _flame_set()
    labels = (
        HDBSCAN(
            metric="precomputed",
            min_cluster_size=6,
            min_samples=1,
            allow_single_cluster=True,
            copy=True,
        )
        .fit(cosine_distances(x).clip(0, 2))
        .labels_
    )
    biggest = max(set(labels) - {-1}, key=lambda c: np.sum(labels == c))
    kept_ref = [i for i in range(10) if labels[i] == biggest]
    # HDBSCAN may also leave out a benign update at the cluster's edge (here row 5)
    assert set(kept_ref) <= set(range(7)) and len(kept_ref) >= 6
    ids = list(range(100, 110))
    out = _aggregate(build_aggregator("flame", {"lam": 0.0}), x, ids)
    assert out.info["kept"] == [ids[i] for i in kept_ref]
    assert out.flagged == [i for i in range(10) if i not in kept_ref]
    assert {7, 8, 9} <= set(out.flagged)


def test_flame_clips_kept_updates_to_the_median_norm() -> None:
    x = _flame_set(seed=3)
    norms = [float(np.sqrt(sum(v * v for v in row))) for row in x]
    s = sorted(norms)
    bound = (s[4] + s[5]) / 2  # median of 10
    out = _aggregate(build_aggregator("flame", {"lam": 0.0}), x, list(range(10)))
    kept = [i for i in range(10) if i not in out.flagged]
    by_hand = np.mean([x[i] * min(1.0, bound / norms[i]) for i in kept], axis=0)
    assert out.info["clip_bound"] == pytest.approx(bound, rel=1e-12)
    np.testing.assert_allclose(out.update.numpy(), by_hand, rtol=1e-10, atol=1e-12)
    odd = _aggregate(build_aggregator("flame", {"lam": 0.0}), x[:9], list(range(9)))
    assert odd.info["clip_bound"] == pytest.approx(sorted(norms[:9])[4], rel=1e-12)


def test_flame_noise_is_seeded_with_std_lambda_times_bound() -> None:
    p, lam = 200_000, 0.05
    rng = np.random.default_rng(4)
    x = np.ones((5, p)) * rng.uniform(0.5, 2.0, size=(5, 1)) / math.sqrt(p)
    agg = build_aggregator("flame", {"lam": lam})
    a = _aggregate(agg, x, list(range(5)), seed=7)
    b = _aggregate(agg, x, list(range(5)), seed=7)
    c = _aggregate(agg, x, list(range(5)), seed=8)
    assert torch.equal(a.update, b.update) and not torch.equal(a.update, c.update)
    bound = a.info["clip_bound"]
    assert a.info["sigma"] == pytest.approx(lam * bound)
    clean = _aggregate(build_aggregator("flame", {"lam": 0.0}), x, list(range(5))).update
    noise = (a.update - clean).numpy()
    assert abs(noise.mean()) < 5 * lam * bound / math.sqrt(p)
    assert noise.std() == pytest.approx(lam * bound, rel=0.01)


def test_bad_options_and_bounds_say_so_in_one_line() -> None:
    for name, options in [
        ("foolsgold", {"kappa": 0}),
        ("foolsgold", {"history_entries": 0}),
        ("foolsgold", {"scope": "all"}),
        ("flame", {"lam": -1}),
        ("flame", {"min_cluster_size": 1}),
        ("flame", {"min_samples": 0}),
        ("flame", {"sigma": 1}),
    ]:
        with pytest.raises(FlwbcError) as err:
            build_aggregator(name, options)
        assert "\n" not in str(err.value) and name in str(err.value)
    with pytest.raises(FlwbcError, match="at least 2"):
        build_aggregator("flame").check(1)
    with pytest.raises(FlwbcError, match="history_entries"):
        _aggregate(
            build_aggregator("foolsgold", {"history_entries": 50}), np.ones((3, 4)), [0, 1, 2]
        )


# ---------------------------------------------------------------- the detection record


class _Flags(Aggregator):
    name = "flags"

    def __init__(self, flagged: list[int] | None) -> None:
        self.flagged = flagged

    def aggregate(self, updates, weights, ctx):  # noqa: ANN001, ANN201
        return Aggregate(weights.to(updates.dtype) @ updates, {}, flagged=self.flagged)


def _fake_exp(agg: Aggregator) -> SimpleNamespace:
    return SimpleNamespace(
        cfg=SimpleNamespace(seed=0),
        device=torch.device("cpu"),
        root_indices=None,
        attack=None,
        pre_steps=[],
        post_steps=[],
        aggregator=agg,
    )


def test_detection_counts_by_hand() -> None:
    # clients 10..15; attackers 11, 14; the rule flags rows 1, 2, 5 = clients 11, 12, 15
    plan = RoundPlan(
        round=3,
        adversarial=True,
        clients=[10, 11, 12, 13, 14, 15],
        malicious=[False, True, False, False, True, False],
        weights=torch.full((6,), 1 / 6, dtype=torch.float64),
    )
    updates = torch.arange(12, dtype=torch.float64).reshape(6, 2)
    w = torch.zeros(2, dtype=torch.float64)
    out = aggregate_round(_fake_exp(_Flags([5, 1, 2])), plan, w, updates, 0.5, [{}] * 6)
    assert out.info["detection"] == {"flagged": [11, 12, 15], "tp": 1, "fp": 2, "fn": 1, "tn": 2}
    assert detection_record(plan, []) == {"flagged": [], "tp": 0, "fp": 0, "fn": 2, "tn": 4}
    plain = aggregate_round(_fake_exp(_Flags(None)), plan, w, updates, 0.5, [{}] * 6)
    assert "detection" not in plain.info
    torch.testing.assert_close(out.weights, plain.weights)
    # after a step that keeps each client's row (nnm) flags still name clients; after one
    # that merges rows (bucketing) they name none, so no record is written
    from flwbc.preagg import build_pre_aggregators

    for step, kept in (("nnm", True), ("bucketing", False)):
        exp = _fake_exp(_Flags([0]))
        exp.pre_steps = build_pre_aggregators([SimpleNamespace(name=step, options={})])
        got = aggregate_round(exp, plan, w, updates, 0.5, [{}] * 6)
        assert ("detection" in got.info) is kept, step


def test_summary_sums_detection_over_rounds() -> None:
    cfg = SimpleNamespace(seed=0)
    exp = SimpleNamespace(malicious_ids=[1], malicious_set=None, x_mal=None)
    base = {"test_acc": None, "target_conf": None, "adversarial": False, "round": 1}
    records = [
        {**base, "detection": {"flagged": [1], "tp": 1, "fp": 0, "fn": 0, "tn": 3}},
        {**base, "round": 2, "detection": {"flagged": [2, 3], "tp": 0, "fp": 2, "fn": 1, "tn": 1}},
    ]
    got = _summary(cfg, exp, records, 0.0, complete=True)["detection"]  # type: ignore[arg-type]
    assert got == {"tp": 1, "fp": 2, "fn": 1, "tn": 4, "precision": 1 / 3, "recall": 0.5}
    none = [{**base, "detection": {"flagged": [], "tp": 0, "fp": 0, "fn": 0, "tn": 4}}]
    got = _summary(cfg, exp, none, 0.0, complete=True)["detection"]  # type: ignore[arg-type]
    assert got["precision"] is None and got["recall"] is None
    assert "detection" not in _summary(cfg, exp, [base], 0.0, complete=True)  # type: ignore[arg-type]


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["sequential", "batched"])
def test_detection_is_recorded_end_to_end(real_data_dir: Path, tmp_path: Path, engine: str) -> None:
    for rule in ["flame", "foolsgold"]:
        cfg = flwbc.make_config(
            {
                "seed": 5,
                "engine": engine,
                "model": "mlp",
                "data": {"dir": str(real_data_dir), "train_fraction": 0.02},
                "federation": {"num_clients": 12, "clients_per_round": 8, "rounds": 2},
                "local": {"epochs": 1, "batch_size": 32},
                "attack": {"name": "sign_flip", "num_malicious": 3, "rounds": [1, 2]},
                "server": {"aggregator": rule},
                "output": {"dir": str(tmp_path), "name": f"{rule}-{engine}"},
            }
        )
        res = flwbc.run(cfg, progress=False)
        lines = (res.run_dir / "rounds.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        assert len(records) == 2
        for r in records:
            d = r["detection"]
            assert d["tp"] + d["fp"] == len(d["flagged"])
            assert d["tp"] + d["fn"] == len(r["malicious"]) > 0
            assert d["tp"] + d["fp"] + d["fn"] + d["tn"] == len(r["clients"])
            assert set(d["flagged"]) <= set(r["clients"])
        summary = json.loads((res.run_dir / "summary.json").read_text())
        for k in ("tp", "fp", "fn", "tn"):
            assert summary["detection"][k] == sum(r["detection"][k] for r in records)
        assert torch.isfinite(res.weights).all()


class _Raises(Aggregator):
    name = "raises"

    def aggregate(self, updates, weights, ctx):  # noqa: ANN001, ANN201
        raise ValueError("refused")


class _Probe:
    """An attack that asks the deployed server for the aggregate of the round's updates, as
    the adaptive attacks do, and sends the updates unchanged."""

    def __init__(self) -> None:
        self.seen: list[Tensor] = []

    def craft_against(self, exp, t, updates, malicious, server):  # noqa: ANN001, ANN201
        self.seen.append(server(updates))
        return updates


def test_a_diverged_round_goes_on_as_nan_instead_of_crashing() -> None:
    # FLAME's HDBSCAN refuses NaN (sklearn: "np.nan values found"); a run whose benign updates
    # are NaN once the model diverged must record a NaN model, as FedAvg's would be, both in the
    # adaptive attack's simulated server and in the real round
    plan = RoundPlan(
        round=2,
        adversarial=True,
        clients=list(range(6)),
        malicious=[True, False, False, False, False, False],
        weights=torch.full((6,), 1 / 6, dtype=torch.float64),
    )
    w = torch.zeros(4, dtype=torch.float64)
    bad = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="nan"):
        HDBSCAN(metric="precomputed").fit(np.full((6, 6), np.nan))
    exp = _fake_exp(build_aggregator("flame", {}))
    probe = exp.attack = _Probe()
    out = aggregate_round(exp, plan, w, bad, 0.5, [{}] * 6)
    assert torch.isnan(out.weights).all()
    assert out.info["aggregator"] == {"nonfinite_input": True}
    assert len(probe.seen) == 1 and torch.isnan(probe.seen[0]).all()
    # finite updates through FLAME: no marker; a rule that fails on finite updates still raises
    fine = aggregate_round(
        _fake_exp(build_aggregator("flame", {})), plan, w, bad.nan_to_num(), 0.5, [{}] * 6
    )
    assert torch.isfinite(fine.weights).all()
    assert "nonfinite_input" not in fine.info.get("aggregator", {})
    with pytest.raises(ValueError, match="refused"):
        aggregate_round(_fake_exp(_Raises()), plan, w, bad.nan_to_num(), 0.5, [{}] * 6)
    nan = aggregate_round(_fake_exp(_Raises()), plan, w, bad, 0.5, [{}] * 6)
    assert torch.isnan(nan.weights).all()


def test_rules_see_whether_rows_are_still_clients(real_data_dir: Path) -> None:
    """A per-client rule behind a row-merging step is refused before any round; a rule whose
    bound depends on the row count is checked on the rows it gets."""
    from flwbc.errors import FlwbcError
    from flwbc.experiment import Experiment
    from flwbc.preagg import build_pre_aggregators
    from flwbc.server import build_aggregator

    for rule in ("foolsgold", "fldetector"):
        cfg = flwbc.make_config(
            {
                "data": {"dir": str(real_data_dir), "train_fraction": 0.01},
                "server": {"aggregator": rule, "pre": ["bucketing"]},
            }
        )
        with pytest.raises(FlwbcError, match=f"'{rule}' keeps a history per client.*'bucketing'"):
            Experiment.prepare(cfg)
    plan = RoundPlan(
        round=1,
        adversarial=False,
        clients=list(range(10)),
        malicious=[False] * 10,
        weights=torch.full((10,), 0.1, dtype=torch.float64),
    )
    exp = _fake_exp(build_aggregator("rlr", {"threshold": 8}))
    exp.pre_steps = build_pre_aggregators([SimpleNamespace(name="bucketing", options={})])
    updates = torch.randn(10, 4, dtype=torch.float64)
    with pytest.raises(FlwbcError, match="rlr"):
        aggregate_round(exp, plan, torch.zeros(4, dtype=torch.float64), updates, 0.0, [{}] * 10)

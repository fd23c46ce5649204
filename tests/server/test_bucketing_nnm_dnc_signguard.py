"""Bucketing and nearest-neighbour mixing (pre-aggregation steps), DnC and SignGuard (rules)
against references written here in numpy: bucketing with the same permutation, NNM by sorting
distances by hand, DnC's scores by numpy's SVD on a fixed coordinate sample, SignGuard's two
filters on a crafted round whose answer is known; the chain bucketing → nnm → median end to end
on both engines; bad options and bounds as one line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import flwbc
from flwbc.errors import FlwbcError
from flwbc.preagg import build_pre_aggregators
from flwbc.server import RoundContext, build_aggregator
from flwbc.server.dnc import dnc_keep


class Ref:
    def __init__(self, name: str, **options: object) -> None:
        self.name, self.options = name, options


def _ctx(k: int, seed: int = 0, ids: list[int] | None = None) -> RoundContext:
    return RoundContext(
        round=1,
        client_ids=list(range(100, 100 + k)) if ids is None else ids,
        generator=torch.Generator().manual_seed(seed),
        global_weights=torch.zeros(1),
    )


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


# ---------------------------------------------------------------- bucketing


@pytest.mark.parametrize(("k", "s"), [(7, 3), (6, 2), (5, 1), (4, 9)])
def test_bucketing_means_of_the_permuted_buckets(k: int, s: int) -> None:
    rng = np.random.default_rng(k * 10 + s)
    x, w = rng.normal(size=(k, 4)), rng.random(k)
    (step,) = build_pre_aggregators([Ref("bucketing", s=s)])
    out, wout, info = step.apply(_t(x), _t(w), _ctx(k), torch.Generator().manual_seed(3))
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(3)).tolist()
    buckets = [perm[i : i + s] for i in range(0, k, s)]
    want = np.array([[np.mean([x[j, c] for j in b]) for c in range(4)] for b in buckets])
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(wout.numpy(), [sum(w[j] for j in b) for b in buckets])
    assert info == {"buckets": [[100 + j for j in b] for b in buckets]}
    json.dumps(info)


def test_bucketing_after_a_merging_step_records_positions() -> None:
    (step,) = build_pre_aggregators([Ref("bucketing", s=2)])
    after_merge = dataclasses.replace(_ctx(5), rows_are_clients=False)
    _, _, info = step.apply(torch.eye(3), torch.ones(3), after_merge, torch.Generator())
    assert sorted(j for b in info["buckets"] for j in b) == [0, 1, 2]


# ---------------------------------------------------------------- NNM


def _nnm_ref(x: np.ndarray, f: int) -> np.ndarray:
    n = len(x)
    out = []
    for i in range(n):
        d = [(float(np.sum((x[i] - x[j]) ** 2)), j) for j in range(n)]
        d[i] = (-1.0, i)  # itself first
        nearest = [j for _, j in sorted(d)[: n - f]]
        out.append(np.mean(x[nearest], axis=0))
    return np.array(out)


@pytest.mark.parametrize(("seed", "n", "f"), [(0, 7, 2), (1, 5, 0), (2, 9, 4), (3, 4, 3)])
def test_nnm_against_sorted_distances(seed: int, n: int, f: int) -> None:
    x = np.random.default_rng(seed).normal(size=(n, 6))
    (step,) = build_pre_aggregators([Ref("nnm", f=f)])
    w = torch.full((n,), 1.0 / n, dtype=torch.float64)
    out, wout, info = step.apply(_t(x), w, _ctx(n), torch.Generator())
    np.testing.assert_allclose(out.numpy(), _nnm_ref(x, f), rtol=1e-12, atol=1e-15)
    assert torch.equal(wout, w) and info == {}


def test_nnm_ties_go_to_lower_rows() -> None:
    # rows 1, 2 and 3 are all at squared distance 1 from row 0: its 2 nearest are 0 and 1
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    (step,) = build_pre_aggregators([Ref("nnm", f=2)])
    out, _, _ = step.apply(_t(x), torch.ones(4, dtype=torch.float64), _ctx(4), torch.Generator())
    np.testing.assert_array_equal(out.numpy(), _nnm_ref(x, 2))
    np.testing.assert_array_equal(out[0].numpy(), [0.5, 0.0])


def test_bucketing_then_nnm_then_median_compose() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(8, 3))
    steps = build_pre_aggregators([Ref("bucketing", s=2), Ref("nnm", f=1)])
    u, w, ctx = _t(x), torch.full((8,), 0.125, dtype=torch.float64), _ctx(8)
    for i, step in enumerate(steps):
        u, w, _ = step.apply(u, w, ctx, torch.Generator().manual_seed(i))
    agg = build_aggregator("median").aggregate(u, w, ctx)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0)).tolist()
    buckets = np.array([x[perm[i : i + 2]].mean(axis=0) for i in range(0, 8, 2)])
    np.testing.assert_allclose(agg.update.numpy(), np.median(_nnm_ref(buckets, 1), axis=0))
    np.testing.assert_allclose(w.numpy(), [0.25] * 4)


# ---------------------------------------------------------------- DnC


def _dnc_keep_ref(sub: np.ndarray, keep: int) -> set[int]:
    centred = sub - sub.mean(axis=0)
    v = np.linalg.svd(centred, full_matrices=False)[2][0]
    scores = [float(np.dot(centred[i], v)) ** 2 for i in range(len(sub))]
    return set(sorted(range(len(sub)), key=lambda i: (scores[i], i))[:keep])


def test_dnc_scores_on_a_fixed_coordinate_sample_match_numpy_svd() -> None:
    rng = np.random.default_rng(11)
    x = rng.normal(size=(9, 50))
    coords = rng.choice(50, size=20, replace=False)
    for keep in (1, 5, 8, 9):
        got = dnc_keep(_t(x[:, coords]), keep).tolist()
        assert set(got) == _dnc_keep_ref(x[:, coords], keep) and got == sorted(got)


@pytest.mark.parametrize(
    ("b", "niters", "c", "f"), [(30, 3, 1.0, 2), (7, 4, 1.5, 2), (500, 2, 1.0, 1)]
)
def test_dnc_intersects_the_kept_sets_and_averages(b: int, niters: int, c: float, f: int) -> None:
    rng = np.random.default_rng(b)
    x = rng.normal(size=(10, 40))
    agg = build_aggregator("dnc", {"b": b, "niters": niters, "c": c, "f": f})
    got = agg.aggregate(_t(x), _t(np.full(10, 0.1)), _ctx(10, seed=9))
    # the reference draws the documented coordinate samples from the same seeded stream
    gen, good = torch.Generator().manual_seed(9), set(range(10))
    for _ in range(niters):
        coords = torch.randperm(40, generator=gen)[:b].numpy() if b < 40 else np.arange(40)
        good &= _dnc_keep_ref(x[:, coords], int(10 - c * f))
    kept = sorted(good)
    np.testing.assert_allclose(got.update.numpy(), x[kept].mean(axis=0), rtol=1e-12)
    assert got.flagged == [i for i in range(10) if i not in good]
    assert got.info == {"selected": [100 + i for i in kept]}


def test_dnc_removes_attackers_along_a_common_direction() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(scale=0.1, size=(10, 200))
    x[7:] += 3.0 * rng.normal(size=200)  # three colluders shifted the same way
    got = build_aggregator("dnc", {"f": 3, "b": 50}).aggregate(_t(x), _t(np.ones(10)), _ctx(10))
    assert got.flagged == [7, 8, 9]
    np.testing.assert_allclose(got.update.numpy(), x[:7].mean(axis=0), rtol=1e-12)


# ---------------------------------------------------------------- SignGuard


def _signguard_round(flip: float = 0.05) -> np.ndarray:
    """7 benign updates (a common sign pattern with 70% positive coordinates, each sign flipped
    with probability `flip`; norm 1, row 6 scaled to norm 5) and 3 sign-flipped ones with
    norm 2."""
    rng = np.random.default_rng(0)
    p = 2000
    base = np.where(rng.random(p) < 0.7, 1.0, -1.0)
    signs = [base * np.where(rng.random(p) < flip, -1.0, 1.0) for _ in range(10)]
    x = np.array([s * rng.uniform(0.5, 1.5, p) for s in signs])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[6] *= 5.0
    x[7:] *= -2.0
    return x


@pytest.mark.parametrize("flip", [0.05, 0.0])
def test_signguard_filters_by_hand(flip: float) -> None:
    # flip 0: the benign rows' features coincide, the estimated bandwidth is 0 and every
    # distinct feature vector is a cluster
    pytest.importorskip("sklearn")
    x = _signguard_round(flip)
    norms = np.linalg.norm(x, axis=1)
    med = np.median(norms)  # 1.0: six at 1, three at 2, one at 5
    norm_ok = {i for i in range(10) if 0.1 * med <= norms[i] <= 3.0 * med}
    assert norm_ok == set(range(10)) - {6}
    pos = (x > 0).mean(axis=1)
    assert np.all(np.abs(pos[:7] - 0.68) < 0.08) and np.all(np.abs(pos[7:] - 0.32) < 0.08)
    kept = sorted(norm_ok & set(range(7)))  # the sign filter's majority: rows 0-6
    clipped = np.array([x[i] * min(1.0, med / norms[i]) for i in kept])

    got = build_aggregator("signguard", {"frac": 1.0}).aggregate(
        _t(x), _t(np.full(10, 0.1)), _ctx(10)
    )
    np.testing.assert_allclose(got.update.numpy(), clipped.mean(axis=0), rtol=1e-12)
    assert got.flagged == [6, 7, 8, 9]
    assert got.info == {
        "selected": [100 + i for i in kept],
        "norm_rejected": [106],
        "sign_rejected": [107, 108, 109],
        "clusters": 2,
    }


def test_signguard_sign_features_by_hand() -> None:
    from flwbc.server.signguard import sign_features

    sub = torch.tensor([[1.0, -2.0, 0.0, 3.0], [-1.0, -1.0, -1.0, 0.0], [0.0, 0.0, 5.0, 5.0]])
    shares = np.array([[0.5, 0.25, 0.25], [0.0, 0.25, 0.75], [0.5, 0.5, 0.0]])
    want = shares / (shares.max(axis=0) + 1e-8)
    np.testing.assert_allclose(sign_features(sub), want)


def test_signguard_on_a_sampled_fraction_keeps_the_benign_majority() -> None:
    pytest.importorskip("sklearn")
    got = build_aggregator("signguard").aggregate(
        _t(_signguard_round()), _t(np.full(10, 0.1)), _ctx(10, seed=4)
    )
    assert got.flagged == [6, 7, 8, 9]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: build_aggregator("dnc", {"niters": 0}),
            "aggregator 'dnc': option niters = 0: Input should be greater than or equal to 1",
        ),
        (lambda: build_aggregator("dnc", {"k": 1}), "aggregator 'dnc' has no option k"),
        (
            lambda: build_aggregator("dnc", {"f": 3}).check(3),
            "aggregator 'dnc' needs n > ⌈c·f⌉ updates per round (n=3, ⌈c·f⌉=3)",
        ),
        (
            lambda: build_aggregator("signguard", {"lower": 2.0, "upper": 1.0}),
            "aggregator 'signguard': lower must be below upper (got 2.0 >= 1.0)",
        ),
        (
            lambda: build_aggregator("signguard", {"frac": 1.5}),
            "aggregator 'signguard': option frac = 1.5: Input should be less than or equal to 1",
        ),
        (
            lambda: build_pre_aggregators([Ref("bucketing", s=0)]),
            "pre-aggregation step 'bucketing': option s = 0: Input should be greater than or "
            "equal to 1",
        ),
        (
            lambda: build_pre_aggregators([Ref("nnm", f=-1)]),
            "pre-aggregation step 'nnm': option f = -1: Input should be greater than or equal to 0",
        ),
        (
            lambda: build_pre_aggregators([Ref("nnm", f=3)])[0].apply(
                torch.eye(3), torch.ones(3), _ctx(3), torch.Generator()
            ),
            "pre-aggregation step 'nnm' needs more than f updates per round (n=3, f=3)",
        ),
    ],
)
def test_bad_options_and_bounds_are_one_line(build, message: str) -> None:
    with pytest.raises(FlwbcError) as err:
        build()
    assert message in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_bucketing_nnm_median_chain_runs_on_both_engines(real_data_dir: Path, tmp_path: Path):
    def run(engine: str) -> flwbc.RunResult:
        return flwbc.run(
            {
                "seed": 3,
                "engine": engine,
                "model": "mlp",
                "data": {"dir": str(real_data_dir), "train_fraction": 0.05},
                "federation": {"num_clients": 10, "clients_per_round": 6, "rounds": 2},
                "local": {"epochs": 1, "batch_size": 32},
                "attack": {"name": "sign_flip", "num_malicious": 1, "rounds": [1]},
                "server": {
                    "aggregator": "median",
                    "pre": [
                        {"name": "bucketing", "options": {"s": 2}},
                        {"name": "nnm", "options": {"f": 1}},
                    ],
                },
                "output": {"dir": str(tmp_path), "name": f"pre-{engine}"},
                "threads": 1,
            },
            progress=False,
        )

    seq, bat = run("sequential"), run("batched")
    for rec in seq.records:
        buckets = rec["pre"]["bucketing"]["buckets"]
        assert len(buckets) == 3 and sorted(sum(buckets, [])) == sorted(rec["clients"])
    assert [r["pre"] for r in seq.records] == [r["pre"] for r in bat.records]
    assert torch.allclose(seq.weights, bat.weights, atol=1e-5)


def test_dnc_leaves_out_rows_that_are_not_finite() -> None:
    """A client whose model diverged sends NaN or inf, which no SVD projects: DnC runs on the
    finite rows (the numpy reference on those rows, the same coordinate stream) and flags the
    others; with no more than ⌈c·f⌉ finite rows nothing is trusted."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(10, 40))
    x[3, 5], x[7] = np.nan, np.inf
    good_rows = [i for i in range(10) if i not in (3, 7)]
    got = build_aggregator("dnc", {"b": 20, "niters": 3, "f": 2}).aggregate(
        _t(x), _t(np.ones(10)), _ctx(10, seed=4)
    )
    gen, good = torch.Generator().manual_seed(4), set(range(8))
    for _ in range(3):
        coords = torch.randperm(40, generator=gen)[:20].numpy()
        good &= _dnc_keep_ref(x[good_rows][:, coords], 8 - 2)
    kept = sorted(good_rows[i] for i in good)
    np.testing.assert_allclose(got.update.numpy(), x[kept].mean(axis=0), rtol=1e-12)
    assert got.flagged == [i for i in range(10) if i not in kept] and {3, 7} <= set(got.flagged)
    x[:9] = np.nan  # one finite row left, f = 2: nothing to trust
    none = build_aggregator("dnc", {"f": 2}).aggregate(_t(x), _t(np.ones(10)), _ctx(10))
    assert torch.equal(none.update, torch.zeros(40, dtype=torch.float64))
    assert none.flagged == list(range(10)) and none.info == {"selected": []}

"""Robust aggregation rules against independent references: numpy / scipy, and brute-force
implementations written here with Python loops, plus property tests (permutation invariance,
identical updates, bounded influence of outliers) and the `check` / option error lines."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, stats

from flwbc.errors import FlwbcError
from flwbc.server import AGGREGATORS, RoundContext, build_aggregator

MY_RULES = ["median", "trimmed_mean", "krum", "multikrum", "bulyan"]
MY_RULES += ["geomed", "norm_bound", "centered_clip"]


def _ctx(k: int, p: int, round_: int = 1, ids: list[int] | None = None) -> RoundContext:
    return RoundContext(
        round=round_,
        client_ids=list(range(k)) if ids is None else ids,
        generator=torch.Generator().manual_seed(0),
        global_weights=torch.zeros(p, dtype=torch.float64),
    )


def _random_round(seed: int, k: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    updates = rng.normal(size=(k, p))
    raw = rng.random(k) + 0.05
    return updates, raw / raw.sum()


def _run(name: str, options: dict, updates: np.ndarray, weights: np.ndarray | None = None, **kw):
    k, p = updates.shape
    if weights is None:
        weights = np.full(k, 1.0 / k)
    agg = kw.pop("agg", None) or build_aggregator(name, options)
    out = agg.aggregate(
        torch.from_numpy(np.ascontiguousarray(updates)),
        torch.from_numpy(np.ascontiguousarray(weights)),
        kw.pop("ctx", None) or _ctx(k, p),
    )
    assert out.update.shape == (p,)
    json.dumps(out.info)  # the per-round record must be JSON-serialisable
    return out.update.numpy(), out.info


# ---------------------------------------------------------------- brute-force references


def _krum_scores_ref(x: np.ndarray, f: int) -> list[float]:
    n = len(x)
    scores = []
    for i in range(n):
        d = sorted(float(np.sum((x[i] - x[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(d[: max(n - f - 2, 0)]))
    return scores


def _krum_ref(x: np.ndarray, f: int) -> int:
    scores = _krum_scores_ref(x, f)
    return min(range(len(x)), key=lambda i: (scores[i], i))


def _multikrum_ref(x: np.ndarray, f: int, m: int) -> tuple[np.ndarray, list[int]]:
    scores = _krum_scores_ref(x, f)
    chosen = sorted(range(len(x)), key=lambda i: (scores[i], i))[:m]
    return x[chosen].mean(axis=0), chosen


def _bulyan_ref(x: np.ndarray, f: int) -> tuple[np.ndarray, list[int]]:
    n, p = x.shape
    theta, beta = n - 2 * f, n - 4 * f
    remaining, chosen = list(range(n)), []
    for _ in range(theta):
        scores = _krum_scores_ref(x[remaining], f)
        best = min(range(len(remaining)), key=lambda i: (scores[i], i))
        chosen.append(remaining.pop(best))
    sel = x[chosen]
    out = np.empty(p)
    for c in range(p):
        vals = sel[:, c]
        med = np.median(vals)
        order = sorted(range(theta), key=lambda i: (abs(vals[i] - med), i))
        out[c] = np.mean(vals[order[:beta]])
    return out, chosen


def _geomed_objective(z: np.ndarray, x: np.ndarray, alpha: np.ndarray) -> float:
    return float(np.sum(alpha * np.linalg.norm(x - z, axis=1)))


def _geomed_ref(x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    def fun(z):
        diff = z - x
        dist = np.linalg.norm(diff, axis=1)
        grad = (alpha / np.maximum(dist, 1e-300)) @ diff
        return float(alpha @ dist), grad

    res = optimize.minimize(
        fun, alpha @ x, jac=True, method="BFGS", options={"gtol": 1e-12, "maxiter": 10_000}
    )
    return res.x


def _clip_ref(x: np.ndarray, bound: float) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norms > bound, x * (bound / np.maximum(norms, 1e-300)), x)


# ---------------------------------------------------------------- against references


@pytest.mark.parametrize("k", [5, 6, 9, 10, 15])
def test_median_matches_numpy(k):
    x, _ = _random_round(k, k, 23)
    out, _ = _run("median", {}, x)
    np.testing.assert_array_equal(out, np.median(x, axis=0))


def test_median_even_is_mean_of_middle_values_not_lower():
    x = np.array([[0.0], [1.0], [3.0], [10.0]])
    out, _ = _run("median", {}, x)
    assert out[0] == 2.0


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.2, 0.25, 0.3, 0.4, 0.49])
@pytest.mark.parametrize("k", [5, 7, 10, 12, 15])
def test_trimmed_mean_matches_scipy(beta, k):
    x, _ = _random_round(int(beta * 100) + k, k, 17)
    out, info = _run("trimmed_mean", {"beta": beta}, x)
    np.testing.assert_allclose(
        out, stats.trim_mean(x, proportiontocut=beta, axis=0), rtol=1e-12, atol=1e-14
    )
    assert info["trimmed"] == math.floor(beta * k)


@pytest.mark.parametrize(("k", "f"), [(5, 0), (5, 1), (8, 2), (10, 1), (11, 4), (15, 6)])
def test_krum_matches_brute_force(k, f):
    x, w = _random_round(100 + k + f, k, 13)
    ids = [50 + 3 * i for i in range(k)]
    out, info = _run("krum", {"f": f}, x, w, ctx=_ctx(k, 13, ids=ids))
    best = _krum_ref(x, f)
    np.testing.assert_array_equal(out, x[best])
    assert info["selected_pos"] == [best]
    assert info["selected"] == [ids[best]]


def test_krum_tie_goes_to_lowest_row():
    x = np.zeros((5, 3))
    out, info = _run("krum", {"f": 1}, x)
    assert info["selected_pos"] == [0]
    x = np.array([[5.0, 0], [1, 0], [1, 0], [1, 0], [9, 0]])
    _, info = _run("krum", {"f": 1}, x)
    assert info["selected_pos"] == [1]


@pytest.mark.parametrize(("k", "f", "m"), [(5, 1, None), (7, 2, 3), (10, 1, 1), (12, 3, 12)])
def test_multikrum_matches_brute_force(k, f, m):
    x, w = _random_round(200 + k, k, 11)
    ids = [7 * i + 1 for i in range(k)]
    opts = {"f": f} if m is None else {"f": f, "m": m}
    out, info = _run("multikrum", opts, x, w, ctx=_ctx(k, 11, ids=ids))
    ref, chosen = _multikrum_ref(x, f, k - f if m is None else m)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-14)
    assert info["selected_pos"] == chosen
    assert info["selected"] == [ids[c] for c in chosen]


def test_multikrum_with_m_one_is_krum():
    x, _ = _random_round(5, 9, 8)
    a, _ = _run("multikrum", {"f": 2, "m": 1}, x)
    b, _ = _run("krum", {"f": 2}, x)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("k", "f"), [(5, 0), (7, 1), (10, 1), (11, 2), (14, 2), (15, 3)])
def test_bulyan_matches_brute_force(k, f):
    x, w = _random_round(300 + k + f, k, 19)
    ids = [1000 - i for i in range(k)]
    out, info = _run("bulyan", {"f": f}, x, w, ctx=_ctx(k, 19, ids=ids))
    ref, chosen = _bulyan_ref(x, f)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-14)
    assert info["selected_pos"] == chosen
    assert info["selected"] == [ids[c] for c in chosen]


@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize(("k", "p"), [(5, 5), (5, 40), (10, 20), (15, 8)])
def test_geomed_matches_scipy_minimize(uniform, k, p):
    x, w = _random_round(400 + k + p, k, p)
    if uniform:
        w = np.full(k, 1.0 / k)
    ref = _geomed_ref(x, w)
    f_ref = _geomed_objective(ref, x, w)
    # default options: the objective is what the stopping rule controls (relative tol 1e-7);
    # the objective is flat near its minimum, so the point is only close
    out, info = _run("geomed", {}, x, w)
    assert abs(_geomed_objective(out, x, w) - f_ref) <= 1e-4 * f_ref
    assert np.abs(out - ref).max() <= 2e-2
    assert 1 <= info["iterations"] <= 100
    # run (nearly) to convergence: the same point as scipy's
    out, info = _run("geomed", {"tol": 1e-13, "max_iter": 2000}, x, w)
    np.testing.assert_allclose(out, ref, atol=1e-4)
    assert abs(_geomed_objective(out, x, w) - f_ref) <= 1e-9 * f_ref


def test_geomed_with_a_zero_weight_ignores_that_row():
    x, w = _random_round(7, 8, 6)
    w[3] = 0.0
    w /= w.sum()
    x_far = x.copy()
    x_far[3] = 1e3
    a, _ = _run("geomed", {}, x, w)
    b, _ = _run("geomed", {}, x_far, w)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_geomed_heavy_point_is_the_median():
    # a point holding more than half the weight is the geometric median
    x, _ = _random_round(8, 6, 5)
    w = np.array([0.6, 0.1, 0.1, 0.1, 0.05, 0.05])
    out, _ = _run("geomed", {"max_iter": 1000, "tol": 0.0}, x, w)
    np.testing.assert_allclose(out, x[0], atol=1e-5)


@pytest.mark.parametrize("bound", [0.5, 3.0, 4.5, 100.0])
def test_norm_bound(bound):
    x, w = _random_round(9, 10, 20)
    x *= np.linspace(0.15, 1.2, 10)[
        :, None
    ]  # norms from about 0.7 to 7: bounds clip all, some or none
    norms = np.linalg.norm(x, axis=1)
    out, info = _run("norm_bound", {"bound": bound}, x, w)
    np.testing.assert_allclose(out, w @ _clip_ref(x, bound), rtol=1e-12, atol=1e-14)
    assert info["clipped"] == int(np.sum(norms > bound))
    # the clipped rows themselves, one at a time (all the weight on one update)
    for i in range(len(x)):
        one = np.eye(len(x))[i]
        row, _ = _run("norm_bound", {"bound": bound}, x, one)
        assert np.linalg.norm(row) <= bound * (1 + 1e-12)
        if norms[i] <= bound:
            np.testing.assert_array_equal(row, x[i])
        else:
            np.testing.assert_allclose(row, x[i] * bound / norms[i], rtol=1e-12)


def _centered_clip_ref(x, w, v, tau, iters):
    for _ in range(iters):
        v = v + w @ _clip_ref(x - v, tau)
    return v


@pytest.mark.parametrize("tau", [0.1, 1.0, 3.0])
def test_centered_clip_first_round_one_iteration(tau):
    x, w = _random_round(10, 10, 12)
    out, info = _run("centered_clip", {"tau": tau}, x, w)
    np.testing.assert_allclose(out, w @ _clip_ref(x, tau), rtol=1e-12, atol=1e-14)
    assert info["clipped"] == int(np.sum(np.linalg.norm(x, axis=1) > tau))


def test_centered_clip_huge_tau_is_weighted_mean():
    x, w = _random_round(11, 9, 14)
    agg = build_aggregator("centered_clip", {"tau": 1e12, "iters": 3})
    for r in (1, 2, 3):
        x, w = _random_round(11 + r, 9, 14)
        out, info = _run("", {}, x, w, agg=agg, ctx=_ctx(9, 14, r))
        np.testing.assert_allclose(out, w @ x, rtol=1e-10, atol=1e-12)
        assert info["clipped"] == 0


def test_centered_clip_uses_previous_aggregate_and_iterates():
    tau, iters = 0.7, 4
    agg = build_aggregator("centered_clip", {"tau": tau, "iters": iters})
    v = np.zeros(10)
    for r in range(1, 5):
        x, w = _random_round(20 + r, 8, 10)
        out, _ = _run("", {}, x, w, agg=agg, ctx=_ctx(8, 10, r))
        v = _centered_clip_ref(x, w, v, tau, iters)
        np.testing.assert_allclose(out, v, rtol=1e-12, atol=1e-13)


def test_centered_clip_state_dict_round_trip():
    opts = {"tau": 0.5, "iters": 2}
    rounds = [_random_round(30 + r, 7, 9) for r in range(4)]
    full = build_aggregator("centered_clip", opts)
    first = build_aggregator("centered_clip", opts)
    assert first.state_dict() == {}
    expected = [
        _run("", {}, x, w, agg=full, ctx=_ctx(7, 9, r + 1))[0] for r, (x, w) in enumerate(rounds)
    ]
    for r, (x, w) in enumerate(rounds[:2]):
        _run("", {}, x, w, agg=first, ctx=_ctx(7, 9, r + 1))
    state = first.state_dict()
    assert set(state) == {"v"}
    resumed = build_aggregator("centered_clip", opts)
    resumed.load_state_dict({k: t.clone() for k, t in state.items()})
    for r, (x, w) in enumerate(rounds[2:], start=2):
        out, _ = _run("", {}, x, w, agg=resumed, ctx=_ctx(7, 9, r + 1))
        np.testing.assert_array_equal(out, expected[r])
    # an empty state means the first round again
    fresh = build_aggregator("centered_clip", opts)
    fresh.load_state_dict({})
    np.testing.assert_array_equal(_run("", {}, *rounds[0], agg=fresh)[0], expected[0])


def test_centered_clip_state_of_wrong_size_is_an_error():
    agg = build_aggregator("centered_clip")
    agg.load_state_dict({"v": torch.zeros(3, dtype=torch.float64)})
    with pytest.raises(FlwbcError, match="centered_clip"):
        _run("", {}, *_random_round(0, 5, 4), agg=agg)


# ---------------------------------------------------------------- dtype, info

RULE_CASES = [
    ("fedavg", {}),
    ("median", {}),
    ("trimmed_mean", {"beta": 0.2}),
    ("krum", {"f": 1}),
    ("multikrum", {"f": 1}),
    ("bulyan", {"f": 1}),
    ("geomed", {}),
    ("norm_bound", {"bound": 2.0}),
    ("centered_clip", {"tau": 1.5, "iters": 3}),
]


@pytest.mark.parametrize(("name", "opts"), RULE_CASES)
def test_float32_in_float32_out(name, opts):
    x, w = _random_round(40, 9, 15)
    ref, _ = _run(name, opts, x, w)
    out = build_aggregator(name, opts).aggregate(
        torch.from_numpy(x.astype(np.float32)), torch.from_numpy(w), _ctx(9, 15)
    )
    assert out.update.dtype == torch.float32
    np.testing.assert_allclose(out.update.numpy(), ref, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- properties

# Configurations without structural ties: Krum with at least 2 neighbours in each score; Bulyan
# with f = 0 (everything selected) or f = 3 (its last Krum step still uses 2 neighbours). Geomed
# runs a fixed number of iterations so both orders stop at the same step.
PERMUTATION_CASES = [
    ("fedavg", {}, 5),
    ("median", {}, 5),
    ("trimmed_mean", {"beta": 0.2}, 5),
    ("trimmed_mean", {"beta": 0.4}, 5),
    ("krum", {"f": 1}, 5),
    ("krum", {"f": 2}, 7),
    ("multikrum", {"f": 1}, 5),
    ("multikrum", {"f": 2, "m": 3}, 7),
    ("bulyan", {"f": 0}, 5),
    ("bulyan", {"f": 3}, 15),
    ("geomed", {"max_iter": 60, "tol": 0.0}, 5),
    ("norm_bound", {"bound": 3.0}, 5),
    ("centered_clip", {"tau": 2.0, "iters": 3}, 5),
]


@pytest.mark.parametrize(("name", "opts", "kmin"), PERMUTATION_CASES)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_permutation_invariant(name, opts, kmin, data):
    k = data.draw(st.integers(kmin, 15), label="k")
    p = data.draw(st.integers(5, 30), label="p")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    x, w = _random_round(seed, k, p)
    perm = np.random.default_rng(seed + 1).permutation(k)
    a, info_a = _run(name, opts, x, w)
    b, info_b = _run(name, opts, x[perm], w[perm])
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    if "selected_pos" in info_a:
        assert sorted(perm[info_b["selected_pos"]].tolist()) == sorted(info_a["selected_pos"])


IDENTITY_CASES = [
    ("fedavg", {}),
    ("median", {}),
    ("trimmed_mean", {"beta": 0.3}),
    ("krum", {"f": 1}),
    ("multikrum", {"f": 1}),
    ("bulyan", {"f": 1}),
    ("geomed", {}),
    ("norm_bound", {"bound": 1e3}),
    ("centered_clip", {"tau": 1e3}),
]


@pytest.mark.parametrize(("name", "opts"), IDENTITY_CASES)
@settings(max_examples=15, deadline=None)
@given(k=st.integers(7, 15), p=st.integers(5, 30), seed=st.integers(0, 2**32 - 1))
def test_identical_updates_give_that_update(name, opts, k, p, seed):
    x, w = _random_round(seed, k, p)
    row = x[0] * 5
    out, _ = _run(name, opts, np.tile(row, (k, 1)), w)
    np.testing.assert_allclose(out, row, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["norm_bound", "centered_clip"])
def test_identical_updates_clipped_rules_give_clipped_update(name):
    x, w = _random_round(3, 8, 10)
    row = x[0] * 10
    out, _ = _run(name, {}, np.tile(row, (8, 1)), w)  # bound / tau = 1, one iteration
    np.testing.assert_allclose(out, row / np.linalg.norm(row), rtol=1e-12)


def _with_outliers(data, k: int, p: int, b: int):
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(k, p))
    pos = rng.choice(k, size=b, replace=False)
    x[pos] = rng.choice([-1e6, 1e6], size=(b, p)) * (1 + rng.random((b, p)))
    benign = np.delete(x, pos, axis=0)
    return x, pos, benign


def _within_benign_range(out, benign):
    assert np.all(out >= benign.min(axis=0) - 1e-12)
    assert np.all(out <= benign.max(axis=0) + 1e-12)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), k=st.integers(5, 15), p=st.integers(5, 30))
def test_median_bounded_by_benign(data, k, p):
    b = data.draw(st.integers(0, (k - 1) // 2), label="outliers")
    x, _, benign = _with_outliers(data, k, p, b)
    _within_benign_range(_run("median", {}, x)[0], benign)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), k=st.integers(5, 15), p=st.integers(5, 30))
def test_trimmed_mean_bounded_by_benign(data, k, p):
    beta = data.draw(st.sampled_from([0.1, 0.2, 0.3, 0.4, 0.45]), label="beta")
    b = data.draw(st.integers(0, int(beta * k)), label="outliers")
    x, _, benign = _with_outliers(data, k, p, b)
    _within_benign_range(_run("trimmed_mean", {"beta": beta}, x)[0], benign)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), k=st.integers(5, 15), p=st.integers(5, 30))
def test_krum_selects_a_benign_update(data, k, p):
    f = data.draw(st.integers(0, (k - 3) // 2), label="f")
    b = data.draw(st.integers(0, f), label="outliers")
    x, pos, _ = _with_outliers(data, k, p, b)
    out, info = _run("krum", {"f": f}, x)
    (sel,) = info["selected_pos"]
    assert sel not in pos
    np.testing.assert_array_equal(out, x[sel])
    out, info = _run("multikrum", {"f": f, "m": k - f}, x)
    if b == f:  # exactly the benign updates survive
        assert not set(info["selected_pos"]) & set(pos.tolist())
        _within_benign_range(out, np.delete(x, pos, axis=0))


@settings(max_examples=40, deadline=None)
@given(data=st.data(), k=st.integers(5, 15), p=st.integers(5, 30))
def test_bulyan_bounded_by_benign(data, k, p):
    f = data.draw(st.integers(0, (k - 3) // 4), label="f")
    b = data.draw(st.integers(0, f), label="outliers")
    x, _, benign = _with_outliers(data, k, p, b)
    _within_benign_range(_run("bulyan", {"f": f}, x)[0], benign)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), k=st.integers(5, 15), p=st.integers(5, 30))
def test_geomed_bounded_by_benign(data, k, p):
    # Minsker (2015), Lemma 2.1: if at most a fraction α < 1/2 of the points lie farther than r
    # from c, the geometric median lies within C_α·r of c, C_α = (1 - α) / sqrt(1 - 2α).
    b = data.draw(st.integers(0, (k - 1) // 2), label="outliers")
    x, _, benign = _with_outliers(data, k, p, b)
    out, _ = _run("geomed", {}, x)
    c = benign.mean(axis=0)
    r = np.linalg.norm(benign - c, axis=1).max()
    alpha = b / k
    assert np.linalg.norm(out - c) <= (1 - alpha) / math.sqrt(1 - 2 * alpha) * r * 1.01


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 15), p=st.integers(1, 30), seed=st.integers(0, 2**32 - 1))
def test_fedavg_uniform_is_numpy_mean(k, p, seed):
    x, _ = _random_round(seed, k, p)
    np.testing.assert_allclose(_run("fedavg", {}, x)[0], x.mean(axis=0), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- check bounds, options


def _one_line_error(excinfo, name: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    assert f"'{name}'" in msg
    return msg


@pytest.mark.parametrize("f", [0, 1, 2, 4])
@pytest.mark.parametrize("name", ["krum", "multikrum"])
def test_krum_check_bound(name, f):
    agg = build_aggregator(name, {"f": f})
    for n in range(1, 2 * f + 3):
        with pytest.raises(FlwbcError) as excinfo:
            agg.check(n)
        msg = _one_line_error(excinfo, name)
        assert f"n={n}" in msg and f"f={f}" in msg and "2f + 2" in msg
    agg.check(2 * f + 3)
    agg.check(2 * f + 10)


def test_multikrum_m_bound():
    agg = build_aggregator("multikrum", {"f": 1, "m": 8})
    agg.check(8)
    with pytest.raises(FlwbcError) as excinfo:
        agg.check(7)
    msg = _one_line_error(excinfo, "multikrum")
    assert "m=8" in msg and "n=7" in msg


@pytest.mark.parametrize("f", [0, 1, 2, 3])
def test_bulyan_check_bound(f):
    agg = build_aggregator("bulyan", {"f": f})
    for n in range(1, 4 * f + 3):
        with pytest.raises(FlwbcError) as excinfo:
            agg.check(n)
        msg = _one_line_error(excinfo, "bulyan")
        assert f"n={n}" in msg and f"f={f}" in msg and "4f + 3" in msg
    agg.check(4 * f + 3)


def test_trimmed_mean_check():
    # beta < 0.5 always leaves a value for n >= 1; a beta that would trim everything is refused
    for beta in (0.0, 0.1, 0.4, 0.499999):
        agg = build_aggregator("trimmed_mean", {"beta": beta})
        for n in range(1, 40):
            agg.check(n)
        with pytest.raises(FlwbcError) as excinfo:
            agg.check(0)
        _one_line_error(excinfo, "trimmed_mean")
    for beta in (0.5, 0.6, 1.0):
        with pytest.raises(FlwbcError) as excinfo:
            build_aggregator("trimmed_mean", {"beta": beta})
        assert "beta" in _one_line_error(excinfo, "trimmed_mean")


@pytest.mark.parametrize("name", MY_RULES)
def test_every_rule_needs_an_update(name):
    opts = {"f": 0} if name in ("krum", "multikrum", "bulyan") else {}
    with pytest.raises(FlwbcError) as excinfo:
        build_aggregator(name, opts).check(0)
    _one_line_error(excinfo, name)


@pytest.mark.parametrize(
    ("name", "opts"),
    [
        ("trimmed_mean", {"beta": 0.6}),
        ("trimmed_mean", {"beta": -0.1}),
        ("trimmed_mean", {"beta": "0.1"}),
        ("krum", {"f": -1}),
        ("krum", {"f": 1.5}),
        ("krum", {"f": True}),
        ("multikrum", {"f": -1}),
        ("multikrum", {"m": 0}),
        ("bulyan", {"f": -1}),
        ("geomed", {"max_iter": 0}),
        ("geomed", {"eps": 0.0}),
        ("geomed", {"tol": -1e-3}),
        ("norm_bound", {"bound": 0}),
        ("norm_bound", {"bound": -1.0}),
        ("norm_bound", {"bound": float("nan")}),
        ("centered_clip", {"tau": 0.0}),
        ("centered_clip", {"iters": 0}),
        ("median", {"beta": 0.1}),
        ("krum", {"fraction": 0.1}),
        ("centered_clip", {"bound": 1.0}),
    ],
)
def test_invalid_options(name, opts):
    with pytest.raises(FlwbcError) as excinfo:
        build_aggregator(name, opts)
    msg = _one_line_error(excinfo, name)
    assert next(iter(opts)) in msg


def test_defaults_build():
    for name in MY_RULES:
        build_aggregator(name)


def test_rank_based_flags():
    assert {n for n in [*MY_RULES, "fedavg"] if AGGREGATORS[n].rank_based} == {
        "median",
        "trimmed_mean",
        "krum",
        "multikrum",
        "bulyan",
    }


@pytest.mark.parametrize("name", ["median", "trimmed_mean", "krum", "multikrum", "bulyan"])
def test_rank_based_rules_ignore_weights(name):
    x, w = _random_round(50, 11, 9)
    a, _ = _run(name, {}, x, w)
    b, _ = _run(name, {}, x, None)
    np.testing.assert_array_equal(a, b)

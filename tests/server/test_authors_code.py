"""Rules against their authors' own functions, transcribed here into numpy (and scikit-learn
where the authors call it), on seeded random inputs:

- FoolsGold: `foolsgold(grads)` of DistributedML/FoolsGold (`deep-fg/fg/foolsgold.py`);
- SignGuard: `signguard_multiclass.aggregate` of JianXu95/SignGuard
  (`aggregators/signguard.py`), its contiguous coordinate block and mean shift with bin
  seeding and unclaimed points;
- DnC's count of kept updates: `int(n - c*f)` as in JianXu95/SignGuard `aggregators/DnC.py`
  (the DnC authors' release holds no DnC);
- FLDetector: the scoring loop of zaixizhang/FLDetector (`train_*.py`: `lbfgs`, the predicted
  gradient, `distance / np.sum(distance)`, the sum of the last 10 score rows) and its
  detection (`detection1`: the gap statistic; `detection`: 2-means, the higher mean is
  malicious) over several rounds.

The random parts that the authors leave to a global generator (the block offset, k-means
starts, the gap statistic's reference sets) are drawn here from the same seeds as the rule's,
so that what is compared is the computation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flwbc.server import RoundContext, build_aggregator

sklearn_cluster = pytest.importorskip("sklearn.cluster")


def _ctx(ids: list[int], seed: int, w: np.ndarray | None = None, rnd: int = 1) -> RoundContext:
    return RoundContext(
        round=rnd,
        client_ids=ids,
        generator=torch.Generator().manual_seed(seed),
        global_weights=torch.zeros(1) if w is None else torch.from_numpy(w),
    )


# ---------------------------------------------------------------- FoolsGold


def _foolsgold_authors(grads: np.ndarray, kappa: float = 1.0) -> np.ndarray:
    """deep-fg/fg/foolsgold.py, `foolsgold(grads)`, with numpy's cosine; `kappa` multiplies
    the logit (the paper's κ, fixed at 1 in the original)."""
    n = grads.shape[0]
    unit = grads / np.linalg.norm(grads, axis=1, keepdims=True)
    cs = unit @ unit.T
    np.fill_diagonal(cs, 1.0)  # cos(h_i, h_i), which the original has only up to rounding
    cs = cs - np.eye(n)
    maxcs = np.max(cs, axis=1)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            if maxcs[i] < maxcs[j]:
                cs[i][j] = cs[i][j] * maxcs[i] / maxcs[j]
    wv = 1 - (np.max(cs, axis=1))
    wv[wv > 1] = 1
    wv[wv < 0] = 0
    wv = wv / np.max(wv)
    wv[(wv == 1)] = 0.99
    with np.errstate(divide="ignore"):
        wv = kappa * (np.log(wv / (1 - wv)) + 0.5)
    wv[(np.isinf(wv) + wv > 1)] = 1
    wv[(wv < 0)] = 0
    return wv


def _foolsgold_others(h: np.ndarray) -> np.ndarray:
    """Algorithm 1 read literally (v_i over j ≠ i), with Python loops: `self_in_max=False`."""
    n = len(h)
    unit = h / np.linalg.norm(h, axis=1, keepdims=True)
    cs = unit @ unit.T
    v = [max(cs[i, j] for j in range(n) if j != i) for i in range(n)]
    par = cs.copy()
    for i in range(n):
        for j in range(n):
            if i != j and v[j] > v[i]:
                par[i, j] = cs[i, j] * v[i] / v[j]
    alpha = np.array(
        [min(max(1 - max(par[i, j] for j in range(n) if j != i), 0), 1) for i in range(n)]
    )
    alpha = alpha / alpha.max()
    alpha[alpha == 1] = 0.99
    return np.array([0.0 if a <= 0 else min(max(math.log(a / (1 - a)) + 0.5, 0), 1) for a in alpha])


def _weights(x: np.ndarray, **options: object) -> np.ndarray:
    n = x.shape[0]
    out = build_aggregator("foolsgold", dict(options)).aggregate(
        torch.from_numpy(x), torch.full((n,), 1.0 / n, dtype=torch.float64), _ctx(list(range(n)), 0)
    )
    return np.array(out.info["weights"])


def test_foolsgold_anti_correlated_history_as_the_authors() -> None:
    rng = np.random.default_rng(0)
    d = rng.normal(size=30)
    x = np.array([d + 0.3 * rng.normal(size=30) for _ in range(5)] + [-3 * d])
    ref = _foolsgold_authors(x)
    np.testing.assert_allclose(ref, [0, 0, 0, 0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(_weights(x), ref, atol=1e-6)
    # the form that was the default flips the pardoning: the five alike are trusted instead
    others = _weights(x, self_in_max=False)
    np.testing.assert_allclose(others, _foolsgold_others(x), atol=1e-6)
    assert others[:5].min() > 0.9


def test_foolsgold_matches_the_authors_on_random_histories() -> None:
    rng = np.random.default_rng(1)
    negative = differ = 0
    for case in range(400):
        n, p = int(rng.integers(2, 9)), int(rng.integers(2, 7))
        x = rng.normal(size=(n, p))
        if case % 3 == 0:  # a common direction, as sybils have
            x[: n // 2 + 1] += 2 * rng.normal(size=p)
        ref = _foolsgold_authors(x)
        if not np.all(np.isfinite(ref)):
            continue  # the authors' 0/0 when every history points the same way
        np.testing.assert_allclose(_weights(x), ref, atol=1e-6, err_msg=f"case {case}")
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        cs = unit @ unit.T - 2 * np.eye(n)
        if cs.max(axis=1).min() < 0:
            negative += 1
            differ += not np.allclose(_foolsgold_others(x), ref, atol=1e-6)
    assert negative > 20 and differ > 0  # the cases where the two forms part were covered


# ---------------------------------------------------------------- SignGuard


def _signguard_authors(grads: np.ndarray, coords: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """aggregators/signguard.py, `signguard_multiclass.aggregate` (iters = 1, mean shift), with
    the sampled coordinates given: the authors take `grads[:, idx:(idx + num_spars)]` with
    `idx = torch.randint(0, P - num_spars)`."""
    from sklearn.cluster import MeanShift, estimate_bandwidth

    grads = torch.from_numpy(grads)
    num_users = len(grads)
    all_set = set(range(num_users))
    grad_l2norm = torch.norm(grads, dim=1).numpy()
    norm_med = np.median(grad_l2norm)
    benign_idx1 = all_set.intersection(
        {int(i) for i in np.argwhere(grad_l2norm > 0.1 * norm_med).flat}
    )
    benign_idx1 = benign_idx1.intersection(
        {int(i) for i in np.argwhere(grad_l2norm < 3.0 * norm_med).flat}
    )
    num_spars = len(coords)
    gradss = grads[:, torch.from_numpy(coords)]
    sign_grads = torch.sign(gradss)
    sign_pos = (sign_grads.eq(1.0)).sum(dim=1, dtype=torch.float32) / (num_spars)
    sign_zero = (sign_grads.eq(0.0)).sum(dim=1, dtype=torch.float32) / (num_spars)
    sign_neg = (sign_grads.eq(-1.0)).sum(dim=1, dtype=torch.float32) / (num_spars)
    feat = [sign_pos / (sign_pos.max() + 1e-8), sign_zero / (sign_zero.max() + 1e-8)]
    feat.append(sign_neg / (sign_neg.max() + 1e-8))
    sign_feat = torch.stack(feat, dim=1).numpy()
    bandwidth = estimate_bandwidth(sign_feat, quantile=0.5, n_samples=50)
    ms = MeanShift(bandwidth=bandwidth, bin_seeding=True, cluster_all=False)
    ms.fit(sign_feat)
    labels = ms.labels_
    labels_unique = np.unique(labels)
    n_cluster = len(labels_unique) - (1 if -1 in labels_unique else 0)
    num_class = [np.sum(labels == i) for i in range(n_cluster)]
    benign_class = np.argmax(num_class)
    benign_idx2 = all_set.intersection({int(i) for i in np.argwhere(labels == benign_class).flat})
    benign_idx = sorted(benign_idx2.intersection(benign_idx1))
    grad_norm = torch.norm(grads, dim=1).reshape((-1, 1))
    norm_clip = grad_norm.median(dim=0)[0].item()
    grad_norm_clipped = torch.clamp(grad_norm, 0, norm_clip)
    grads_clip = (grads / grad_norm) * grad_norm_clipped
    return grads_clip[benign_idx].mean(dim=0).numpy(), benign_idx, labels


def _signguard_round(rng: np.random.Generator, kind: str) -> np.ndarray:
    """n benign updates around a common sign pattern and f attackers of one kind."""
    n, p = int(rng.integers(8, 21)), int(rng.integers(200, 600))
    f = int(rng.integers(1, (n - 1) // 2 + 1))
    base = rng.normal(size=p) * 0.5
    x = base + rng.normal(size=(n, p))
    if kind == "sign_flip":
        x[:f] = -x[:f]
    elif kind == "sign_pattern":  # most coordinates pushed positive, the norm kept
        norms = np.linalg.norm(x[:f], axis=1, keepdims=True)
        x[:f] = np.abs(x[:f]) + rng.uniform(0, 0.5)
        x[:f] *= norms / np.linalg.norm(x[:f], axis=1, keepdims=True)
    elif kind == "norm":
        x[:f] *= rng.choice([0.05, 5.0])
    elif kind == "sparse":  # zero coordinates, which give the zero-share feature weight
        x[:f] *= rng.random((f, p)) < 0.5
    return x


@pytest.mark.parametrize("coordinates", ["block", "random"])
def test_signguard_selects_what_the_authors_select(coordinates: str) -> None:
    rng = np.random.default_rng(7)
    unclaimed = 0
    kinds = ["sign_flip", "sign_pattern", "norm", "sparse"]
    for case in range(60):
        x = _signguard_round(rng, kinds[case % 4])
        n, p = x.shape
        agg = build_aggregator("signguard", {"coordinates": coordinates})
        got = agg.aggregate(
            torch.from_numpy(x), torch.full((n,), 1.0 / n), _ctx(list(range(n)), case)
        )
        b, gen = int(0.1 * p), torch.Generator().manual_seed(case)
        if coordinates == "block":
            idx = int(torch.randint(0, p - b, (1,), generator=gen))
            coords = np.arange(idx, idx + b)
        else:
            coords = torch.randperm(p, generator=gen)[:b].numpy()
        want, kept, labels = _signguard_authors(x, coords)
        assert got.info["selected"] == kept, f"case {case}"
        assert got.flagged == [i for i in range(n) if i not in kept]
        np.testing.assert_allclose(got.update.numpy(), want, rtol=1e-10, atol=1e-12)
        unclaimed += int(np.any(labels == -1))
    assert unclaimed >= 5  # rounds where mean shift left points in no cluster were covered


def test_signguard_former_clustering_is_an_option() -> None:
    # every point a seed and every point assigned: the clustering flwbc used before
    rng = np.random.default_rng(11)
    parted = 0
    for case in range(30):
        x = _signguard_round(rng, ["sign_flip", "sparse", "sign_pattern"][case % 3])
        n, p = x.shape
        old = build_aggregator("signguard", {"bin_seeding": False, "cluster_all": True})
        got = old.aggregate(
            torch.from_numpy(x), torch.full((n,), 1.0 / n), _ctx(list(range(n)), case)
        )
        coords = torch.randperm(p, generator=torch.Generator().manual_seed(case))[: int(0.1 * p)]
        from sklearn.cluster import MeanShift, estimate_bandwidth

        from flwbc.server.signguard import sign_features

        feats = sign_features(torch.from_numpy(x[:, coords.numpy()]))
        bw = estimate_bandwidth(feats, quantile=0.5, n_samples=50)
        labels = MeanShift(bandwidth=bw).fit(feats).labels_
        cluster = set(np.flatnonzero(labels == np.argmax(np.bincount(labels))).tolist())
        assert set(got.info["sign_rejected"]) == set(range(n)) - cluster
        parted += got.info["selected"] != _signguard_authors(x, coords.numpy())[1]
    assert parted > 0


# ---------------------------------------------------------------- DnC


@pytest.mark.parametrize(
    ("n", "f", "c"), [(12, 3, 1.5), (10, 2, 1.0), (10, 3, 0.5), (31, 30, 0.1), (9, 4, 1.9)]
)
def test_dnc_keeps_int_n_minus_c_f_updates(n: int, f: int, c: float) -> None:
    rng = np.random.default_rng(n * f)
    x = rng.normal(size=(n, 20))
    got = build_aggregator("dnc", {"f": f, "c": c, "niters": 1}).aggregate(
        torch.from_numpy(x), torch.full((n,), 1.0 / n), _ctx(list(range(n)), 0)
    )
    assert len(got.info["selected"]) == int(n - c * f)  # the authors' `int(num_users - c*f)`


# ---------------------------------------------------------------- FLDetector


def _lbfgs_authors(s_list: list[np.ndarray], y_list: list[np.ndarray], v: np.ndarray):
    """train_*.py `lbfgs`, in numpy (columns as in the MXNet original)."""
    curr_s = np.concatenate(s_list, axis=1)
    curr_y = np.concatenate(y_list, axis=1)
    s_time_y = curr_s.T @ curr_y
    s_time_s = curr_s.T @ curr_s
    r_k = np.triu(s_time_y)
    l_k = s_time_y - r_k
    sigma_k = (y_list[-1].T @ s_list[-1]) / (s_list[-1].T @ s_list[-1])
    d_k_diag = np.diag(s_time_y)
    upper = np.concatenate([sigma_k * s_time_s, l_k], axis=1)
    lower = np.concatenate([l_k.T, -np.diag(d_k_diag)], axis=1)
    mat_inv = np.linalg.inv(np.concatenate([upper, lower], axis=0))
    approx = sigma_k * v
    p_mat = np.concatenate([curr_s.T @ (sigma_k * v), curr_y.T @ v], axis=0)
    return approx - np.concatenate([sigma_k * curr_s, curr_y], axis=1) @ mat_inv @ p_mat


def _detection1_authors(score: np.ndarray, refs: np.ndarray, seed: int) -> int:
    """train_*.py `detection1` (1: attack detected), the reference draws `refs[k-1][j]` and the
    k-means starts given; where no k satisfies the rule it returns 1 (the original fails)."""
    from sklearn.cluster import KMeans

    nrefs, ks = refs.shape[1], range(1, refs.shape[0] + 1)
    gaps, sdk = np.zeros(len(ks)), np.zeros(len(ks))
    gap_diff = np.zeros(len(ks) - 1)
    score = (score - np.min(score)) / (np.max(score) - np.min(score))
    for i, k in enumerate(ks):
        est = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(score.reshape(-1, 1))
        wk = np.sum(
            [np.square(score[m] - est.cluster_centers_[est.labels_[m]]) for m in range(len(score))]
        )
        wk_ref = np.zeros(nrefs)
        for j in range(nrefs):
            rand = refs[i, j]
            est = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(rand.reshape(-1, 1))
            wk_ref[j] = np.sum(
                [
                    np.square(rand[m] - est.cluster_centers_[est.labels_[m]])
                    for m in range(len(rand))
                ]
            )
        gaps[i] = np.log(np.mean(wk_ref)) - np.log(wk)
        sdk[i] = np.sqrt((1.0 + nrefs) / nrefs) * np.std(np.log(wk_ref))
        if i > 0:
            gap_diff[i - 1] = gaps[i - 1] - gaps[i] + sdk[i]
    select_k = len(ks)
    for i in range(len(gap_diff)):
        if gap_diff[i] >= 0:
            select_k = i + 1
            break
    return int(select_k != 1)


def _detection_authors(score: np.ndarray, seed: int) -> np.ndarray:
    """train_*.py `detection`: 2-means, label 0 (malicious) the cluster of higher mean."""
    from sklearn.cluster import KMeans

    label_pred = (
        KMeans(n_clusters=2, n_init=10, random_state=seed).fit(score.reshape(-1, 1)).labels_
    )
    if np.mean(score[label_pred == 0]) < np.mean(score[label_pred == 1]):
        label_pred = 1 - label_pred
    return label_pred == 0


def _fldetector_rounds(attack_from: int, rounds: int, seed: int):
    """Each round's updates of 12 clients on a quadratic loss: clients 0-2 attack (a fixed
    large shift plus noise) from round `attack_from` on."""
    rng = np.random.default_rng(seed)
    p, n = 15, 12
    a = rng.normal(size=(p, p))
    hess = a @ a.T / p + np.eye(p)
    optima = rng.normal(size=(n, p)) * 0.3
    shift = rng.normal(size=p) * 2

    def updates(w: np.ndarray, rnd: int) -> np.ndarray:
        u = -0.1 * (w - optima) @ hess + 0.01 * rng.normal(size=(n, p))
        if rnd >= attack_from:
            u[:3] = shift + 0.5 * rng.normal(size=(3, p))
        return u

    return updates, rng.normal(size=p)


@pytest.mark.parametrize(("attack_from", "seed"), [(1, 0), (8, 1), (100, 2)])
def test_fldetector_detects_as_the_authors_over_rounds(attack_from: int, seed: int) -> None:
    window, start, rounds = 10, 12, 17
    agg = build_aggregator("fldetector", {"gap": "authors", "start_round": start, "window": window})
    updates, w = _fldetector_rounds(attack_from, rounds, seed)
    n = 12
    s_rec: list[np.ndarray] = []
    y_rec: list[np.ndarray] = []
    score_rows: list[np.ndarray] = []
    last_w = last_grad = old = None
    checked = 0
    for rnd in range(1, rounds + 1):
        u = updates(w, rnd)
        gseed = 1000 + rnd
        out = agg.aggregate(
            torch.from_numpy(u),
            torch.full((n,), 1.0 / n, dtype=torch.float64),
            _ctx(list(range(n)), gseed, w, rnd),
        )
        # the authors' loop: score once an L-BFGS pair exists, detect once `window` rows exist
        if s_rec:
            hvp = _lbfgs_authors(s_rec, y_rec, (w - last_w).reshape(-1, 1)).reshape(-1)
            distance = np.linalg.norm(old + hvp - u, axis=1)
            score_rows.append(distance / np.sum(distance))
        flagged = np.zeros(n, dtype=bool)
        if len(score_rows) >= window and rnd >= start:
            score = np.sum(score_rows[-window:], axis=0)
            kseed = int(
                torch.randint(0, 2**31 - 1, (1,), generator=torch.Generator().manual_seed(gseed))
            )
            top = min(7, len(np.unique(score)))
            refs = np.random.default_rng(kseed).uniform(0.0, 1.0, size=(top, 10, n))
            detected = _detection1_authors(score, refs, kseed)
            assert out.info["attack_detected"] == bool(detected), f"round {rnd}"
            if detected:
                flagged = _detection_authors(score, kseed)
            assert out.flagged == np.flatnonzero(flagged).tolist(), f"round {rnd}"
            checked += 1
        grad = np.median(u[~flagged], axis=0)
        np.testing.assert_allclose(out.update.numpy(), grad, rtol=1e-12)
        if last_w is not None:
            s_rec.append((w - last_w).reshape(-1, 1))
            y_rec.append((grad - last_grad).reshape(-1, 1))
            s_rec, y_rec = s_rec[-window:], y_rec[-window:]
        last_w, last_grad, old = w.copy(), grad, u
        w = w + grad
    assert checked == rounds - start + 1

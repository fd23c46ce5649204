"""Min-Max, Min-Sum (Shejwalkar & Houmansadr, NDSS 2021), Fang's attacks on Krum and trimmed
mean (Fang et al., USENIX Security 2020) and Mimic (Karimireddy et al., ICLR 2022) against their
papers' formulas written out in numpy/scipy on small inputs, against brute-force searches, then
end to end on both engines."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

import flwbc
from flwbc.attacks import ATTACKS
from flwbc.attacks.mimic import mimic_choice
from flwbc.errors import FlwbcError
from flwbc.rng import torch_generator
from flwbc.server.base import RoundContext
from flwbc.server.krum import Krum

UPDATES = torch.tensor(
    [
        [1.0, -2.0, 0.5, 0.3],
        [3.0, 0.0, 1.5, -0.2],
        [-1.0, 2.0, 2.5, 0.1],
        [0.5, 1.0, -0.5, 0.4],
        [2.0, 2.0, 2.0, -0.6],
        [0.0, -1.0, 1.0, 0.2],
    ],
    dtype=torch.float64,
)
MALICIOUS = [False, True, False, True, False, False]
BAD, GOOD = [1, 3], [0, 2, 4, 5]


def attack(name: str, seed: int = 0, server: dict | None = None, **options: object):
    cfg = flwbc.make_config(
        {"seed": seed, "attack": {"name": name, "options": options}, "server": server or {}}
    )
    cls = ATTACKS[name]
    return cls(cfg, cls.Options.model_validate(options))


def craft(a, updates: torch.Tensor, malicious: list[bool], t: int = 1) -> torch.Tensor:
    out = a.craft(None, t, updates, malicious)
    good = [i for i, m in enumerate(malicious) if not m]
    assert torch.equal(out[good], updates[good])  # benign rows are untouched
    return out


def seen_of(updates: torch.Tensor, malicious: list[bool], knowledge: str) -> np.ndarray:
    rows = [i for i, m in enumerate(malicious) if m == (knowledge == "partial")]
    return updates[rows].numpy()


# ---------------------------------------------------------------- Min-Max and Min-Sum


def perturbation_ref(x: np.ndarray, direction: str) -> np.ndarray:
    mu = x.mean(0)
    return {
        "unit_vec": -mu / np.linalg.norm(mu),
        "std": -x.std(0, ddof=1),
        "sign": -np.sign(mu),
    }[direction]


def excess_ref(name: str, x: np.ndarray, m: np.ndarray, bound: str = "max") -> float:
    """The constraint's left side minus its right side (≤ 0: m passes), from the paper."""
    pair = np.array([[np.sum((a - b) ** 2) for b in x] for a in x])
    to_m = np.array([np.sum((m - a) ** 2) for a in x])
    if name == "min_max":
        return math.sqrt(to_m.max()) - math.sqrt(pair.max())
    sums = pair.sum(1)
    return to_m.sum() - (sums.max() if bound == "max" else sums.min())


def gamma_star(name: str, x: np.ndarray, p: np.ndarray, bound: str = "max") -> float:
    """The exact largest γ ≥ 0 passing the constraint (brute force: bracket, then brentq)."""
    mu = x.mean(0)

    def g(gamma: float) -> float:
        return excess_ref(name, x, mu + gamma * p, bound)

    assert g(0.0) <= 0
    hi = 1.0
    while g(hi) <= 0:
        hi *= 2
    return brentq(g, 0.0, hi, xtol=1e-14)


@pytest.mark.parametrize("name", ["min_max", "min_sum"])
@pytest.mark.parametrize("direction", ["unit_vec", "std", "sign"])
@pytest.mark.parametrize("knowledge", ["omniscient", "partial"])
def test_agr_agnostic_attacks_send_mu_plus_largest_gamma(name, direction, knowledge) -> None:
    tau = 1e-6
    a = attack(name, direction=direction, knowledge=knowledge, tau=tau)
    out = craft(a, UPDATES, MALICIOUS).numpy()
    x = seen_of(UPDATES, MALICIOUS, knowledge)
    mu, p = x.mean(0), perturbation_ref(x, direction)
    m = out[BAD[0]]
    np.testing.assert_array_equal(out[BAD[1]], m)  # every attacker sends the same update
    gamma = float(np.dot(m - mu, p) / np.dot(p, p))
    np.testing.assert_allclose(m, mu + gamma * p, atol=1e-12)  # m = μ + γ·∇p
    star = gamma_star(name, x, p)
    assert star < 2 * a.options.gamma_init  # inside the search's range
    # the search brackets γ* within 2τ: γ passes, γ + 2τ does not
    assert star - 2 * tau <= gamma <= star + 1e-12
    assert excess_ref(name, x, mu + gamma * p) <= 1e-9
    assert excess_ref(name, x, mu + (gamma + 2 * tau) * p) > 0


def test_min_sum_bound_min_is_the_official_codes_stricter_test() -> None:
    x = UPDATES[GOOD].numpy()
    p = perturbation_ref(x, "std")
    got = {}
    for bound in ("max", "min"):
        out = craft(attack("min_sum", bound=bound, tau=1e-7), UPDATES, MALICIOUS).numpy()
        got[bound] = float(np.dot(out[BAD[0]] - x.mean(0), p) / np.dot(p, p))
        assert got[bound] == pytest.approx(gamma_star("min_sum", x, p, bound), abs=2e-7)
    assert got["min"] < got["max"]


def test_agr_search_stays_below_twice_gamma_init() -> None:
    from flwbc.attacks.agr_search import halving_search

    # always accepted: γ climbs to 2·γ_init − τ at most
    assert 2 - 2e-3 <= halving_search(lambda g: True, 1.0, 1e-3) < 2
    assert halving_search(lambda g: False, 1.0, 1e-3) == 0.0
    # a threshold at 0.3: bracketed within 2τ from below
    got = halving_search(lambda g: g <= 0.3, 1.0, 1e-4)
    assert 0.3 - 2e-4 <= got <= 0.3
    # with a small γ_init the malicious update is capped there, not at γ*
    out = craft(attack("min_max", gamma_init=0.01, tau=1e-6), UPDATES, MALICIOUS).numpy()
    x = UPDATES[GOOD].numpy()
    p = perturbation_ref(x, "std")
    gamma = float(np.dot(out[BAD[0]] - x.mean(0), p) / np.dot(p, p))
    assert 0.02 - 2e-6 <= gamma < 0.02 < gamma_star("min_max", x, p)


def test_agr_agnostic_needs_two_seen_updates() -> None:
    with pytest.raises(FlwbcError, match="at least 2 benign updates"):
        attack("min_max", knowledge="partial").craft(None, 1, UPDATES, [True] + [False] * 5)


def test_bad_option_is_one_clear_error() -> None:
    with pytest.raises(FlwbcError, match="attack 'min_max': option direction = 'bad'"):
        ATTACKS.options("min_max", {"direction": "bad"})
    with pytest.raises(FlwbcError, match="attack 'fang_trmean': option b = 1"):
        ATTACKS.options("fang_trmean", {"b": 1})


# ---------------------------------------------------------------- Fang on Krum


def krum_bound_ref(x: np.ndarray, f: int) -> float:
    """The paper's upper bound on λ, in update space (w_Re = 0), m = m_b + f, c = f."""
    mb, d = x.shape
    m, c = mb + f, f
    dist = np.array([[np.linalg.norm(a - b) for b in x] for a in x])
    sums = [np.sort(np.delete(dist[i], i))[: m - c - 2].sum() for i in range(mb)]
    return min(sums) / (max(m - 2 * c - 1, 1) * math.sqrt(d)) + max(
        np.linalg.norm(a) for a in x
    ) / math.sqrt(d)


def krum_selects_attacker(rows: torch.Tensor, malicious: list[bool], krum_f: int) -> bool:
    """The project's Krum rule on the rows, as the server runs it."""
    ids = list(range(len(rows)))
    ctx = RoundContext(1, ids, torch.Generator(), torch.zeros(rows.shape[1]))
    info = Krum(f=krum_f).aggregate(rows, torch.ones(len(rows)) / len(rows), ctx).info
    return malicious[info["selected_pos"][0]]


def brute_force_lambda(x: torch.Tensor, f: int, krum_f: int, threshold: float = 1e-5) -> float:
    s = torch.where(x.mean(0) > 0, 1.0, -1.0).double()
    lam = krum_bound_ref(x.numpy(), f)
    while lam > threshold:
        rows = torch.cat([(-lam * s).expand(f, -1), x])
        if krum_selects_attacker(rows, [True] * f + [False] * len(x), krum_f):
            break
        lam /= 2
    return lam


def noisy(seed: int, n: int, p: int) -> torch.Tensor:
    """Updates whose spread is large next to their mean, as SGD noise makes them."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, p, generator=gen, dtype=torch.float64) + 0.5 * torch.linspace(-1, 1, p)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(("f", "krum_f"), [(2, 2), (2, 1), (3, 3)])
def test_fang_krum_lambda_matches_brute_force_and_krum_selects_it(seed, f, krum_f) -> None:
    n = 2 * f + 5
    updates = noisy(seed, n, 8)
    malicious = [i % 3 == 1 and i < 3 * f for i in range(n)]
    assert sum(malicious) == f
    good = [i for i, m in enumerate(malicious) if not m]
    a = attack("fang_krum", krum_f=krum_f)
    out = craft(a, updates, malicious)
    x = updates[good]
    lam = brute_force_lambda(x, f, krum_f)
    s = torch.where(x.mean(0) > 0, 1.0, -1.0).double()
    bad = [i for i, m in enumerate(malicious) if m]
    for i in bad:
        torch.testing.assert_close(out[i], -lam * s, rtol=1e-12, atol=0)
    assert a.options.threshold < lam < krum_bound_ref(x.numpy(), f) / 2  # halved, then chosen
    # the crafted updates, in the round's row order, are what the project's Krum selects
    assert krum_selects_attacker(out, malicious, krum_f)


def test_fang_krum_bound_and_halving_by_hand() -> None:
    x = UPDATES[GOOD]
    from flwbc.attacks.fang import fang_krum_lambda

    assert fang_krum_lambda(x, 2) == pytest.approx(krum_bound_ref(x.numpy(), 2), rel=1e-12)
    # n = 6, f = 2 attackers: 4 benign, 2 nearest neighbours, denominator 6 − 4 − 1 = 1
    d = np.array([[np.linalg.norm(a - b) for b in x.numpy()] for a in x.numpy()])
    two = [np.sort(np.delete(d[i], i))[:2].sum() for i in range(4)]
    norms = np.linalg.norm(x.numpy(), axis=1)
    assert krum_bound_ref(x.numpy(), 2) == pytest.approx(min(two) / 2 + norms.max() / 2)
    a = attack("fang_krum", krum_f=1)
    lam = a.lam(x, 2)
    assert lam == pytest.approx(brute_force_lambda(x, 2, 1), rel=1e-12)


def test_fang_krum_simulates_the_servers_krum_f() -> None:
    assert attack("fang_krum", server={"aggregator": "krum", "options": {"f": 3}}).krum_f(2) == 3
    assert attack("fang_krum", server={"aggregator": "multikrum"}).krum_f(2) == 1
    assert attack("fang_krum", server={"aggregator": "median"}).krum_f(2) == 2
    assert attack("fang_krum", krum_f=0, server={"aggregator": "krum"}).krum_f(2) == 0


def test_fang_krum_partial_uses_own_updates_only() -> None:
    updates = noisy(5, 9, 6)
    malicious = [False, True, False, True, False, True, False, False, False]
    a = attack("fang_krum", knowledge="partial", krum_f=1)
    out = craft(a, updates, malicious)
    own = updates[[1, 3, 5]]
    s = torch.where(own.mean(0) > 0, 1.0, -1.0).double()
    torch.testing.assert_close(out[1], -brute_force_lambda(own, 3, 1) * s, rtol=1e-12, atol=0)
    changed = updates.clone()
    changed[[0, 2, 4]] += 5.0  # benign rows they cannot see
    torch.testing.assert_close(craft(a, changed, malicious)[1], out[1], rtol=0, atol=0)


# ---------------------------------------------------------------- Fang on trimmed mean

# columns: s = −1 with u_max > 0 | s = −1 with u_max ≤ 0 | s = +1 with u_min > 0 |
# s = +1 with u_min ≤ 0 | s = −1 from a zero mean
TRIM = torch.tensor(
    [
        [-3.0, -1.0, 1.0, 2.0, -1.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],  # attacker
        [1.0, -2.0, 2.0, -1.0, 1.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],  # attacker
        [-2.0, -0.5, 0.5, 3.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],  # attacker
    ],
    dtype=torch.float64,
)
TRIM_MAL = [False, True, False, True, False, True]


def drawn(seed: int, t: int, j: int, p: int) -> np.ndarray:
    gen = torch_generator(seed, "attack", t, "fang_trmean", j)
    return torch.rand(p, generator=gen, dtype=torch.float64).numpy()


def test_fang_trmean_full_knowledge_by_hand() -> None:
    b, seed, t = 2.0, 11, 3
    out = attack("fang_trmean", seed=seed, b=b).craft(None, t, TRIM, TRIM_MAL).numpy()
    x = TRIM[[0, 2, 4]].numpy()
    hi, lo, mu = x.max(0), x.min(0), x.mean(0)
    for j, row in enumerate([1, 3, 5]):
        r = drawn(seed, t, j, 5)
        for k in range(5):
            if mu[k] > 0:  # s = +1: below the smallest benign value
                low, high = (lo[k] / b, lo[k]) if lo[k] > 0 else (b * lo[k], lo[k])
            else:  # s = −1: above the largest
                low, high = (hi[k], b * hi[k]) if hi[k] > 0 else (hi[k] / b, hi[k])
            assert out[row, k] == pytest.approx(low + r[k] * (high - low), abs=1e-12)
            assert out[row, k] >= hi[k] if mu[k] <= 0 else out[row, k] <= lo[k]
    # column by column with the numbers: u_max = 1 (> 0, s = −1): 1 + r·(2 − 1)
    r0 = drawn(seed, t, 0, 5)
    assert out[1, 0] == pytest.approx(1 + r0[0])
    assert out[1, 1] == pytest.approx(-0.25 - r0[1] * 0.25)  # u_max = −0.5: [−0.5/2, −0.5]
    assert out[1, 2] == pytest.approx(0.25 + r0[2] * 0.25)  # u_min = 0.5: [0.25, 0.5]
    assert out[1, 3] == pytest.approx(-2 + r0[3] * 1.0)  # u_min = −1: [−2, −1]
    assert len({out[1, 0], out[3, 0], out[5, 0]}) == 3  # each attacker its own draws


def test_fang_trmean_partial_knowledge_by_hand() -> None:
    seed, t = 4, 2
    updates = noisy(9, 7, 5)
    malicious = [True, False, True, False, True, False, False]
    out = craft(attack("fang_trmean", seed=seed, knowledge="partial"), updates, malicious, t)
    own = updates[[0, 2, 4]].numpy()
    mu, sd = own.mean(0), own.std(0, ddof=1)
    for j, row in enumerate([0, 2, 4]):
        r = drawn(seed, t, j, 5)
        low = np.where(mu > 0, mu - 4 * sd, mu + 3 * sd)
        np.testing.assert_allclose(out[row].numpy(), low + r * sd, atol=1e-12)


def test_fang_trmean_draws_are_keyed_by_seed_and_round() -> None:
    a = attack("fang_trmean", seed=1)
    first = a.craft(None, 5, TRIM, TRIM_MAL)
    assert torch.equal(first, a.craft(None, 5, TRIM, TRIM_MAL))
    assert not torch.equal(first, a.craft(None, 6, TRIM, TRIM_MAL))
    assert not torch.equal(first, attack("fang_trmean", seed=2).craft(None, 5, TRIM, TRIM_MAL))


# ---------------------------------------------------------------- Mimic


def mimic_ref(x: np.ndarray) -> int:
    """Brute force: the top eigenvector of the P × P covariance (numpy.linalg.eigh)."""
    vals, vecs = np.linalg.eigh(np.cov(x.T))
    z = vecs[:, -1]
    assert vals[-1] > vals[-2] + 1e-9  # a unique top direction
    return int(np.argmax(np.abs((x - x.mean(0)) @ z)))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("knowledge", ["omniscient", "partial"])
def test_mimic_copies_the_update_a_full_eigendecomposition_picks(seed, knowledge) -> None:
    gen = torch.Generator().manual_seed(seed)
    scale = torch.tensor([3.0, 1.0, 0.5, 0.2, 0.1, 0.05], dtype=torch.float64)
    updates = torch.randn(9, 6, generator=gen, dtype=torch.float64) * scale
    malicious = [i in (2, 5, 7) for i in range(9)]
    out = craft(attack("mimic", knowledge=knowledge), updates, malicious)
    x = seen_of(updates, malicious, knowledge)
    want = x[mimic_ref(x)]
    for i in (2, 5, 7):
        np.testing.assert_array_equal(out[i].numpy(), want)


def test_mimic_by_hand() -> None:
    # benign updates on a line through the mean, one far out: it is the one mimicked
    x = torch.tensor(
        [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [-1.0, -1.0, 0.1], [5.0, 5.0, 0.0], [0.0, 0.0, -0.1]],
        dtype=torch.float64,
    )
    updates = torch.cat([x, torch.zeros(2, 3, dtype=torch.float64)])
    out = craft(attack("mimic"), updates, [False] * 5 + [True] * 2)
    assert torch.equal(out[5], x[3]) and torch.equal(out[6], x[3])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_mimic_never_copies_a_diverged_update(bad: float) -> None:
    """A seen update with a non-finite entry is left out; the others decide as without it."""
    gen = torch.Generator().manual_seed(3)
    scale = torch.tensor([3.0, 1.0, 0.5, 0.2], dtype=torch.float64)
    x = torch.randn(6, 4, generator=gen, dtype=torch.float64) * scale
    broken = x.clone()
    broken[1, 2] = bad
    rows = [0, 2, 3, 4, 5]
    assert mimic_choice(broken) == rows[mimic_ref(x[rows].numpy())]
    assert mimic_choice(torch.full((3, 4), bad, dtype=torch.float64)) == 0


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "server", "partition"),
    [
        ("min_max", {"aggregator": "median"}, "iid"),
        ("min_sum", {"aggregator": "median"}, "iid"),
        # Krum picks −λ·s (near the origin) only when the benign updates differ enough from
        # each other next to their norms: with 2 attackers of 5 not so after one IID epoch
        ("fang_krum", {"aggregator": "krum", "options": {"f": 1}}, "shards"),
        ("fang_trmean", {"aggregator": "trimmed_mean", "options": {"beta": 0.2}}, "iid"),
        ("mimic", {"aggregator": "median"}, "iid"),
    ],
)
def test_agr_tailored_attacks_run_on_both_engines(
    name: str, server: dict, partition: str, real_data_dir: Path, tmp_path: Path
) -> None:
    def run(engine: str) -> flwbc.RunResult:
        return flwbc.run(
            {
                "seed": 4,
                "engine": engine,
                "data": {
                    "dir": str(real_data_dir),
                    "train_fraction": 0.05,
                    "partition": partition,
                },
                "federation": {"num_clients": 10, "clients_per_round": 5, "rounds": 1},
                "local": {"epochs": 1, "batch_size": 32},
                "attack": {"name": name, "num_malicious": 2, "rounds": [1]},
                "server": server,
                "output": {"dir": str(tmp_path), "name": f"{name}-{engine}"},
                "threads": 1,
            },
            progress=False,
        )

    seq, bat = run("sequential"), run("batched")
    rec = seq.records[0]
    assert rec["adversarial"] and len(rec["malicious"]) == 2
    if name == "fang_krum":  # Krum took an attacker's update
        assert set(rec["aggregator"]["selected"]) <= set(rec["malicious"])
    assert torch.allclose(seq.weights, bat.weights, atol=1e-5)

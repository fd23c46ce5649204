"""FL-WBC (paper §5.1, eq. 8-10): the mask rule, the stateful per-step hook and the Laplace noise.

References are brute-force numpy loops, hand-computed cases and the closed-form Laplace CDF.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flwbc.client.wbc import WBCOptions, WBCStep, laplace_scale
from flwbc.transforms import laplace_noise


def brute_force_perturb(w_hat, h, noise, lr, allowed):
    """Eq. 9-10 entry by entry: W = W_hat + lr*noise where h <= |noise| (and allowed)."""
    w_hat, h, noise = (np.asarray(a, dtype=np.float32).ravel() for a in (w_hat, h, noise))
    allowed = np.ones(w_hat.size, bool) if allowed is None else np.asarray(allowed).ravel()
    out = w_hat.copy()
    mask = np.zeros(w_hat.size, bool)
    for j in range(w_hat.size):
        if allowed[j] and h[j] <= abs(noise[j]):
            out[j] = w_hat[j] + np.float32(lr) * noise[j]
            mask[j] = True
    return out, mask


# --------------------------------------------------------------------------- WBCStep vs brute force


@settings(max_examples=40, deadline=None)
@given(
    rows=st.sampled_from([1, 3]),
    seed=st.integers(0, 2**31 - 1),
    lr=st.sampled_from([0.01, 0.1, 0.5]),
    use_allowed=st.booleans(),
    hessian=st.sampled_from(["update", "gradient"]),
)
def test_wbc_step_matches_brute_force(rows, seed, lr, use_allowed, hessian):
    """Each row of a [G, P] step equals eq. 9-10 applied entry by entry, with that row's own
    noise stream; a mask may differ only where h and |noise| agree to float rounding."""
    n = 64
    rng = np.random.default_rng(seed)
    cfg = _cfg(hessian=hessian, s=0.4)
    b = laplace_scale(0.4, "std")
    allowed = torch.from_numpy(rng.random(n) < 0.6) if use_allowed else torch.ones(n, dtype=bool)
    cfg = _cfg(hessian=hessian, s=0.4, params="weights" if use_allowed else "all")
    gens = [_gen(seed % 1000 + r) for r in range(rows)]
    hook = WBCStep(cfg, lr, allowed, gens)
    p1 = torch.from_numpy(rng.normal(size=(rows, n)).astype(np.float32)) * lr
    p2 = torch.from_numpy(rng.normal(size=(rows, n)).astype(np.float32)) * lr
    w_hat = torch.from_numpy(rng.normal(size=(rows, n)).astype(np.float32))
    if hessian == "update":
        hook(w_hat.clone(), p1, torch.zeros_like(p1))
        out = hook(w_hat.clone(), p2, torch.zeros_like(p2))
        h = ((p2 - p1).abs() / lr).numpy()
    else:
        hook(w_hat.clone(), torch.zeros_like(p1), p1)
        out = hook(w_hat.clone(), torch.zeros_like(p2), p2)
        h = (p2 - p1).abs().numpy()
    for r in range(rows):
        noise = laplace_noise((n,), b, _gen(seed % 1000 + r), "cpu").numpy()
        ref, ref_mask = brute_force_perturb(w_hat[r], h[r], noise, lr, allowed.numpy())
        got_mask = out[r].numpy() != w_hat[r].numpy()
        near_tie = np.isclose(h[r], np.abs(noise), rtol=1e-5)
        assert np.array_equal(got_mask[~near_tie], ref_mask[~near_tie] & (noise[~near_tie] != 0))
        agree = ~near_tie
        np.testing.assert_allclose(out[r].numpy()[agree], ref[agree], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- WBCStep

P = 8
SEED = 1234


def _gen(seed: int = SEED) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cfg(**kw) -> WBCOptions:
    base = {"s": 0.4, "noise": "std", "params": "all", "hessian": "gradient"}
    base.update(kw)
    return WBCOptions(**base)


# factor = h / |noise| for each entry: < 1 must be perturbed, > 1 must not
FACTORS = torch.tensor([0.0, 0.25, 0.5, 0.9, 1.1, 2.0, 10.0, 0.1])
EXPECTED_MASK = [True, True, True, True, False, False, False, True]


def _noise_stream(cfg: WBCOptions, n: int, seed: int = SEED) -> list[torch.Tensor]:
    """The first n noise draws WBCStep makes, from a fresh generator with the same seed."""
    g = _gen(seed)
    scale = laplace_scale(cfg.s, cfg.noise)
    return [laplace_noise((P,), scale, g, "cpu") for _ in range(n)]


def test_wbc_step_gradient_proxy():
    cfg = _cfg(hessian="gradient")
    lr = 0.1
    (noise,) = _noise_stream(cfg, 1)
    assert (noise != 0).all()
    hook = WBCStep(cfg, lr, torch.ones(P, dtype=torch.bool), _gen())

    g1 = torch.linspace(-1.0, 1.0, P)
    w1 = torch.arange(P, dtype=torch.float32)
    s1 = torch.full((P,), 0.3)
    out1 = hook(w1.clone(), s1, g1)
    assert torch.equal(out1, w1), "first step must not be perturbed"

    # change of gradient = factor * |noise|; the step changes wildly, which must not matter
    g2 = g1 + FACTORS * noise.abs() * torch.tensor([1, -1, 1, -1, 1, -1, 1, -1])
    s2 = s1 + torch.tensor([100.0, 0, 100.0, 0, 0, 0, 0, 100.0])
    w2 = torch.arange(P, dtype=torch.float32) * 2
    out2 = hook(w2.clone(), s2, g2)

    h = (g2 - g1).abs()
    ref_mask = (h <= noise.abs()).tolist()
    assert ref_mask == EXPECTED_MASK  # the construction does what we said
    ref, _ = brute_force_perturb(w2, h, noise, lr, None)
    np.testing.assert_allclose(out2.numpy(), ref, rtol=1e-6, atol=1e-7)
    changed = (out2 != w2).tolist()
    assert changed == EXPECTED_MASK
    assert hook.perturbed_fraction() == pytest.approx(sum(EXPECTED_MASK) / P)


def test_wbc_step_update_proxy_divides_by_lr():
    cfg = _cfg(hessian="update")
    lr = 0.1
    (noise,) = _noise_stream(cfg, 1)
    hook = WBCStep(cfg, lr, torch.ones(P, dtype=torch.bool), _gen())

    s1 = torch.linspace(-0.5, 0.5, P)
    g1 = torch.zeros(P)
    w1 = torch.ones(P)
    assert torch.equal(hook(w1.clone(), s1, g1), w1)

    # |s2 - s1| / lr = factor * |noise|; gradients change by a lot, which must not matter
    s2 = s1 + FACTORS * noise.abs() * lr
    g2 = g1 + 1000.0
    w2 = torch.full((P,), -3.0)
    out2 = hook(w2.clone(), s2, g2)
    h = (s2 - s1).abs() / lr
    assert (h <= noise.abs()).tolist() == EXPECTED_MASK
    assert (out2 != w2).tolist() == EXPECTED_MASK
    ref, _ = brute_force_perturb(w2, h, noise, lr, None)
    np.testing.assert_allclose(out2.numpy(), ref, rtol=1e-6, atol=1e-7)


def test_wbc_step_update_proxy_not_divided_would_differ():
    """An entry with |Δstep| <= |noise| but |Δstep|/lr > |noise| must stay unperturbed."""
    cfg = _cfg(hessian="update")
    lr = 0.01
    (noise,) = _noise_stream(cfg, 1)
    hook = WBCStep(cfg, lr, torch.ones(P, dtype=torch.bool), _gen())
    s1 = torch.zeros(P)
    hook(torch.zeros(P), s1, torch.zeros(P))
    s2 = 0.5 * noise.abs()  # /lr = 50 |noise| > |noise|
    w2 = torch.ones(P)
    out = hook(w2.clone(), s2, torch.zeros(P))
    assert torch.equal(out, w2)


def test_wbc_step_consecutive_steps_use_previous_step_and_next_noise():
    cfg = _cfg(hessian="gradient")
    lr = 0.5
    n1, n2 = _noise_stream(cfg, 2)
    hook = WBCStep(cfg, lr, torch.ones(P, dtype=torch.bool), _gen())
    g1 = torch.zeros(P)
    g2 = torch.full((P,), 10.0)  # h = 10 > |noise|: nothing perturbed at step 2
    assert (n1.abs() < 10).all()
    g3 = g2 + FACTORS * n2.abs()  # compared with g2, not g1
    w = torch.zeros(P)
    hook(w.clone(), w, g1)
    out2 = hook(w.clone(), w, g2)
    assert torch.equal(out2, w)
    out3 = hook(w.clone(), w, g3)
    assert (out3 != w).tolist() == EXPECTED_MASK
    ref, _ = brute_force_perturb(w, (g3 - g2).abs(), n2, lr, None)
    np.testing.assert_allclose(out3.numpy(), ref, rtol=1e-6, atol=1e-7)
    assert hook.perturbed_fraction() == pytest.approx(sum(EXPECTED_MASK) / (2 * P))


@pytest.mark.parametrize("reset", [True, False])
def test_wbc_step_reset_each_epoch(reset):
    cfg = _cfg(hessian="gradient", reset_each_epoch=reset)
    lr = 0.5
    n1, n2 = _noise_stream(cfg, 2)
    hook = WBCStep(cfg, lr, torch.ones(P, dtype=torch.bool), _gen())
    w = torch.zeros(P)
    zeros = torch.zeros(P)  # gradient never changes: h = 0 <= |noise| everywhere
    hook.new_epoch()
    assert torch.equal(hook(w.clone(), zeros, zeros), w)
    out = hook(w.clone(), zeros, zeros)
    np.testing.assert_allclose(out.numpy(), (lr * n1).numpy(), rtol=1e-6)
    hook.new_epoch()
    first_of_epoch2 = hook(w.clone(), zeros, zeros)
    if reset:
        assert torch.equal(first_of_epoch2, w)
        second = hook(w.clone(), zeros, zeros)
        np.testing.assert_allclose(second.numpy(), (lr * n2).numpy(), rtol=1e-6)
    else:
        np.testing.assert_allclose(first_of_epoch2.numpy(), (lr * n2).numpy(), rtol=1e-6)


def test_wbc_step_weights_only():
    weight_mask = torch.tensor([True, True, False, True, False, True, True, False])
    cfg = _cfg(hessian="gradient", params="weights")
    lr = 0.5
    (noise,) = _noise_stream(cfg, 1)
    hook = WBCStep(cfg, lr, weight_mask, _gen())
    w = torch.zeros(P)
    hook(w.clone(), w, torch.zeros(P))
    out = hook(w.clone(), w, torch.zeros(P))  # h = 0: every allowed entry is perturbed
    assert (out != 0).tolist() == weight_mask.tolist()
    np.testing.assert_allclose(out[weight_mask].numpy(), (lr * noise[weight_mask]).numpy())

    hook_all = WBCStep(_cfg(hessian="gradient", params="all"), lr, weight_mask, _gen())
    hook_all(w.clone(), w, torch.zeros(P))
    assert (hook_all(w.clone(), w, torch.zeros(P)) != 0).all()


def test_wbc_step_zero_strength_is_identity():
    hook = WBCStep(_cfg(s=0.0), 0.1, torch.ones(P, dtype=torch.bool), _gen())
    w = torch.randn(P, generator=_gen(5))
    for i in range(4):
        g = torch.full((P,), float(i))
        assert torch.equal(hook(w.clone(), g, g), w)
    assert hook.perturbed_fraction() == 0.0


def test_wbc_step_noise_parametrisation():
    """noise="scale" draws with Laplace scale s, "std" with scale s/sqrt(2)."""
    for noise_kind in ("std", "scale"):
        cfg = _cfg(noise=noise_kind, s=0.8)
        b = 0.8 if noise_kind == "scale" else 0.8 / math.sqrt(2)
        ref = laplace_noise((P,), b, _gen(), "cpu")
        hook = WBCStep(cfg, 1.0, torch.ones(P, dtype=torch.bool), _gen())
        w = torch.zeros(P)
        hook(w.clone(), w, w)
        out = hook(w.clone(), w, w)
        np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-6)


# --------------------------------------------------------------------------- laplace noise


def test_laplace_scale():
    assert laplace_scale(0.4, "std") == pytest.approx(0.4 / math.sqrt(2), rel=1e-15)
    assert laplace_scale(0.4, "scale") == 0.4
    with pytest.raises(ValueError):
        laplace_scale(0.4, "variance")


def _laplace_cdf(x: np.ndarray, b: float) -> np.ndarray:
    return np.where(x < 0, 0.5 * np.exp(x / b), 1.0 - 0.5 * np.exp(-x / b))


def test_laplace_noise_moments_and_cdf():
    b = 0.7
    n = 2_000_000
    x = laplace_noise((n,), b, _gen(2024), "cpu")
    assert x.shape == (n,) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    x = x.double().numpy()
    se = 1 / math.sqrt(n)
    # mean 0 (sd sqrt2 b), mean |x| = b (sd b), std sqrt2 b (sd ~ 1.58 b / sqrt n)
    assert abs(x.mean()) < 5 * math.sqrt(2) * b * se
    assert abs(np.abs(x).mean() - b) < 5 * b * se
    assert abs(x.std() - math.sqrt(2) * b) < 5 * 1.6 * b * se
    # symmetry: P(x > 0) = 1/2 and the quantiles of x and -x agree
    assert abs((x > 0).mean() - 0.5) < 5 * 0.5 * se
    qs = [0.01, 0.1, 0.25, 0.4]
    np.testing.assert_allclose(np.quantile(x, qs), -np.quantile(x, [1 - q for q in qs]), atol=0.01)
    # empirical CDF against the closed form
    pts = np.array([-3.0, -1.0, -0.3, 0.0, 0.2, 0.7, 2.0]) * b
    emp = np.array([(x <= p).mean() for p in pts])
    ref = _laplace_cdf(pts, b)
    tol = 5 * np.sqrt(ref * (1 - ref) / n) + 1e-6
    assert np.all(np.abs(emp - ref) < tol), (emp, ref)


def test_laplace_noise_reproducible_and_scaled():
    a = laplace_noise((1000,), 1.0, _gen(3), "cpu")
    b = laplace_noise((1000,), 1.0, _gen(3), "cpu")
    c = laplace_noise((1000,), 2.5, _gen(3), "cpu")
    assert torch.equal(a, b)
    np.testing.assert_allclose(c.numpy(), 2.5 * a.numpy(), rtol=1e-6)
    assert not torch.equal(a, laplace_noise((1000,), 1.0, _gen(4), "cpu"))
    assert laplace_noise((2, 3, 4), 1.0, _gen(3), "cpu").shape == (2, 3, 4)


def _laplace_over_uniform_grid(monkeypatch) -> torch.Tensor:
    """laplace_noise fed every value torch.rand can return in float32, k * 2**-24 for
    k = 0 .. 2**24 - 1, each once: the exact output distribution (as a sorted multiset)."""
    real = torch.rand(1_000_000, generator=_gen(0)) * 2**24
    assert torch.equal(real, real.floor()) and real.max() <= 2**24 - 1  # the premise

    grid = torch.arange(2**24, dtype=torch.float64).mul_(2.0**-24).float()

    def fake_rand(shape, generator=None, device=None):
        assert tuple(shape) == (2**24,)
        return grid.clone()

    with monkeypatch.context() as m:
        m.setattr(torch, "rand", fake_rand)
        x = laplace_noise((2**24,), 1.0, _gen(0), "cpu")
    return x if bool((x[1:] >= x[:-1]).all()) else torch.sort(x).values


def test_laplace_noise_never_infinite(monkeypatch):
    """The docstring promises |u| < 1, i.e. no infinite samples, for every uniform draw."""
    x = _laplace_over_uniform_grid(monkeypatch)
    bad = x[~torch.isfinite(x)].tolist()
    assert not bad, f"{len(bad)} of 2**24 uniform values give non-finite noise: {bad[:5]}"


def test_laplace_noise_exactly_symmetric(monkeypatch):
    """The docstring promises an exactly symmetric distribution: over all 2**24 equally likely
    uniform values the multiset of outputs equals its negation."""
    s = _laplace_over_uniform_grid(monkeypatch)
    asym = int((s != -s.flip(0)).sum())
    assert asym == 0, f"{asym} of 2**24 sorted samples differ from their mirror image"


def test_wbc_step_rows_drawn_in_parallel_equal_serial_draws():
    """Rows drawn by several threads at once give each client its own stream, as one thread."""
    rows, n = 5, 1000
    cfg = _cfg(hessian="update", s=0.4)
    w = torch.randn(rows, n, generator=_gen(7))
    p1 = torch.randn(rows, n, generator=_gen(8)) * 0.01
    p2 = torch.randn(rows, n, generator=_gen(9)) * 0.01
    outs = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            hook = WBCStep(
                cfg,
                0.1,
                torch.ones(n, dtype=torch.bool),
                [_gen(100 + r) for r in range(rows)],
                [0.4, 0.0, 0.4, 0.8, 0.4],
            )
            hook(w.clone(), p1, p1)
            outs.append(hook(w.clone(), p2, p2))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(outs[0][1], w[1]), "a row with s = 0 is never perturbed"
    assert not torch.equal(outs[0][0], w[0])

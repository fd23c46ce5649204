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

from flwbc.client.wbc import WBCStep, laplace_noise, laplace_scale, wbc_perturb
from flwbc.config import WBCConfig


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


# --------------------------------------------------------------------------- wbc_perturb


def test_wbc_perturb_hand_computed_including_equality():
    # dyadic values and lr = 0.5: every sum below is exact in float32
    w_hat = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    h = torch.tensor([0.0, 0.5, 1.0, 2.0, 0.25, 3.0])
    noise = torch.tensor([0.5, -0.5, -1.0, 1.0, 0.0, -4.0])
    # by hand: |noise| = .5 .5 1 1 0 4 ->  h <= |noise|: T, T(=), T(=), F, F, T
    w_before = w_hat.clone()
    out, mask = wbc_perturb(w_hat, h, noise, 0.5, None)
    assert mask.tolist() == [True, True, True, False, False, True]
    assert out.tolist() == [1.25, 1.75, 2.5, 4.0, 5.0, 4.0]
    assert torch.equal(w_hat, w_before), "w_hat must not be modified in place"


def test_wbc_perturb_allowed_restricts_entries():
    w_hat = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    h = torch.tensor([0.0, 0.5, 1.0, 2.0, 0.25, 3.0])
    noise = torch.tensor([0.5, -0.5, -1.0, 1.0, 0.0, -4.0])
    allowed = torch.tensor([True, False, True, True, False, False])
    out, mask = wbc_perturb(w_hat, h, noise, 0.5, allowed)
    assert mask.tolist() == [True, False, True, False, False, False]
    assert out.tolist() == [1.25, 2.0, 2.5, 4.0, 5.0, 6.0]
    assert allowed.tolist() == [True, False, True, True, False, False]


@settings(max_examples=60, deadline=None)
@given(
    shape=st.sampled_from([(7,), (3, 4), (2, 3, 2)]),
    seed=st.integers(0, 2**31 - 1),
    lr=st.sampled_from([0.01, 0.1, 0.5, 1.0]),
    use_allowed=st.booleans(),
)
def test_wbc_perturb_matches_brute_force(shape, seed, lr, use_allowed):
    rng = np.random.default_rng(seed)
    w_hat = rng.normal(size=shape).astype(np.float32)
    noise = rng.laplace(scale=0.4, size=shape).astype(np.float32)
    h = np.abs(rng.laplace(scale=0.4, size=shape)).astype(np.float32)
    # some exact ties h == |noise|
    tie = rng.random(shape) < 0.2
    h[tie] = np.abs(noise[tie])
    allowed = rng.random(shape) < 0.6 if use_allowed else None
    out, mask = wbc_perturb(
        torch.from_numpy(w_hat),
        torch.from_numpy(h),
        torch.from_numpy(noise),
        lr,
        None if allowed is None else torch.from_numpy(allowed),
    )
    ref, ref_mask = brute_force_perturb(w_hat, h, noise, lr, allowed)
    assert out.shape == shape and mask.shape == shape
    assert np.array_equal(mask.numpy().ravel(), ref_mask)
    np.testing.assert_allclose(out.numpy().ravel(), ref, rtol=1e-6, atol=1e-7)
    # untouched entries are bit-identical
    assert np.array_equal(out.numpy().ravel()[~ref_mask], w_hat.ravel()[~ref_mask])


# --------------------------------------------------------------------------- WBCStep

P = 8
SEED = 1234


def _gen(seed: int = SEED) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cfg(**kw) -> WBCConfig:
    base = {"s": 0.4, "noise": "std", "params": "all", "hessian": "gradient"}
    base.update(kw)
    return WBCConfig(**base)


# factor = h / |noise| for each entry: < 1 must be perturbed, > 1 must not
FACTORS = torch.tensor([0.0, 0.25, 0.5, 0.9, 1.1, 2.0, 10.0, 0.1])
EXPECTED_MASK = [True, True, True, True, False, False, False, True]


def _noise_stream(cfg: WBCConfig, n: int, seed: int = SEED) -> list[torch.Tensor]:
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

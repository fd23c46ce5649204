"""The malicious set D_M: distinct images, each relabelled to a wrong target class."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from flwbc.client.malicious_set import choose_malicious_set


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    num_classes=st.integers(2, 12),
    n_labels=st.integers(1, 60),
    frac=st.floats(0.0, 1.0),
)
def test_random_targets_are_wrong_and_indices_distinct(seed, num_classes, n_labels, frac):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n_labels)
    n = max(1, int(round(frac * n_labels)))
    ms = choose_malicious_set(labels, n, num_classes, np.random.default_rng(seed + 1), "train")
    assert ms.source == "train"
    assert len(ms.indices) == n and len(set(ms.indices.tolist())) == n
    assert ((ms.indices >= 0) & (ms.indices < n_labels)).all()
    np.testing.assert_array_equal(ms.true_labels, labels[ms.indices])
    assert len(ms.targets) == n
    assert ((ms.targets >= 0) & (ms.targets < num_classes)).all()
    assert (ms.targets != ms.true_labels).all()
    again = choose_malicious_set(labels, n, num_classes, np.random.default_rng(seed + 1), "train")
    np.testing.assert_array_equal(again.indices, ms.indices)
    np.testing.assert_array_equal(again.targets, ms.targets)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), num_classes=st.integers(2, 10), n=st.integers(1, 15))
def test_fixed_target(seed, num_classes, n):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=80)
    target = int(rng.integers(0, num_classes))
    assume(n <= int((labels != target).sum()))
    ms = choose_malicious_set(labels, n, num_classes, np.random.default_rng(seed), "test", target)
    assert len(set(ms.indices.tolist())) == n
    assert (ms.targets == target).all()
    assert (labels[ms.indices] != target).all()
    np.testing.assert_array_equal(ms.true_labels, labels[ms.indices])


def test_random_targets_uniform_over_other_classes():
    labels = np.zeros(9000, dtype=np.int64)
    ms = choose_malicious_set(labels, 9000, 10, np.random.default_rng(0), "train")
    counts = np.bincount(ms.targets, minlength=10)
    assert counts[0] == 0
    # each of the 9 other classes: Binomial(9000, 1/9), sd ~ 29.8
    assert np.all(np.abs(counts[1:] - 1000) < 5 * 29.8), counts


def test_different_seeds_differ_and_too_many_raises():
    labels = np.arange(200) % 10
    a = choose_malicious_set(labels, 10, 10, np.random.default_rng(1), "train")
    b = choose_malicious_set(labels, 10, 10, np.random.default_rng(2), "train")
    assert not np.array_equal(a.indices, b.indices)
    with pytest.raises(ValueError):
        choose_malicious_set(labels, 201, 10, np.random.default_rng(0), "train")
    with pytest.raises(ValueError):  # only 180 images are not of class 3
        choose_malicious_set(labels, 181, 10, np.random.default_rng(0), "train", target=3)


def test_to_dict_is_plain_lists():
    labels = np.arange(30) % 3
    ms = choose_malicious_set(labels, 4, 3, np.random.default_rng(0), "test")
    d = ms.to_dict()
    assert d["source"] == "test"
    assert d["indices"] == ms.indices.tolist() and all(type(i) is int for i in d["indices"])
    assert d["targets"] == ms.targets.tolist()
    assert d["true_labels"] == ms.true_labels.tolist()


def test_kernel_penalty_gradient_matches_autograd_of_the_dense_penalty():
    """2λ·H·H·(w − W) is the gradient of λ‖H(w − W)‖², H the dense Hessian at W."""
    import torch
    from torch import nn

    from flwbc.analysis.hessian import batch_loss
    from flwbc.client.attack import kernel_penalty_grad
    from flwbc.models import FlatModel

    torch.manual_seed(0)
    model = FlatModel(
        nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3), nn.LogSoftmax(dim=1)).double()
    )
    x, y = torch.randn(20, 5, dtype=torch.float64), torch.randint(0, 3, (20,))
    loss = batch_loss(model, x, y)
    w_global = model.get_vector()
    h = torch.autograd.functional.hessian(loss, w_global)
    w = (w_global + 0.1 * torch.randn(w_global.shape, dtype=torch.float64)).requires_grad_(True)
    penalty = 0.7 * (h @ (w - w_global)).pow(2).sum()
    (ref,) = torch.autograd.grad(penalty, w)
    got = kernel_penalty_grad(loss, w_global, 0.7)(w.detach())
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    # zero at the global model itself
    assert float(kernel_penalty_grad(loss, w_global, 0.7)(w_global).abs().max()) == 0.0

"""Local SGD against torch.optim.SGD, and the shapes of benign and malicious training plans."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parameters_to_vector

from flwbc.client.attack import malicious_plan
from flwbc.client.local import Term, benign_plan, epoch_batches, local_sgd, local_train, single_loss
from flwbc.client.transform import ClientTransform
from flwbc.models import MLP, FlatModel


def _tiny_module(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.LogSoftmax(dim=1))


def _data(n: int = 12, d: int = 4, classes: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def _reference_sgd(module, plan, lr, momentum):
    """torch's own optimiser on a deep copy; returns final flat params, losses, grads per step."""
    ref = copy.deepcopy(module)
    opt = torch.optim.SGD(ref.parameters(), lr=lr, momentum=momentum, dampening=0.0)
    losses, grads = [], []
    for epoch in plan:
        for terms in epoch:
            opt.zero_grad()
            loss = sum(t.weight * F.nll_loss(ref(t.x), t.y) for t in terms)
            loss.backward()
            grads.append(torch.cat([p.grad.reshape(-1) for p in ref.parameters()]).clone())
            losses.append(float(loss.detach()))
            opt.step()
    return parameters_to_vector(ref.parameters()).detach(), losses, grads


def _plan(x, y, index_epochs):
    return [[[Term(x[torch.tensor(i)], y[torch.tensor(i)])] for i in ep] for ep in index_epochs]


INDEX_EPOCHS = [
    [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]],
    [[11, 3, 5], [0, 7, 2, 9, 1], [4, 6, 8, 10]],
]


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_local_sgd_matches_torch_sgd(momentum):
    module = _tiny_module()
    x, y = _data()
    plan = _plan(x, y, INDEX_EPOCHS)
    flat = FlatModel(module)
    w0 = flat.get_vector()
    lr = 0.3
    res = local_sgd(flat, w0, plan, lr=lr, momentum=momentum)
    ref_w, losses, _ = _reference_sgd(module, plan, lr, momentum)
    torch.testing.assert_close(res.weights, ref_w, rtol=0, atol=1e-6)
    assert res.steps == 6
    assert res.mean_loss == pytest.approx(sum(losses) / len(losses), rel=1e-6)
    # w0 and the module are untouched
    torch.testing.assert_close(w0, parameters_to_vector(module.parameters()).detach())
    assert not torch.equal(res.weights, w0)


def test_local_sgd_weighted_two_term_steps_with_mlp():
    torch.manual_seed(3)
    module = MLP(in_channels=1, image_size=2, num_classes=3, hidden=5)
    g = torch.Generator().manual_seed(7)
    x1, y1 = torch.randn(10, 1, 2, 2, generator=g), torch.randint(0, 3, (10,), generator=g)
    x2, y2 = torch.randn(4, 1, 2, 2, generator=g), torch.randint(0, 3, (4,), generator=g)
    a, b = 0.3, 0.7
    steps = [([0, 1, 2], [0, 1]), ([3, 4, 5, 6], [2, 3]), ([7, 8, 9], [1, 3])]
    plan = [
        [
            [
                Term(x1[torch.tensor(i)], y1[torch.tensor(i)], a),
                Term(x2[torch.tensor(j)], y2[torch.tensor(j)], b),
            ]
            for i, j in steps
        ]
        for _ in range(2)
    ]
    flat = FlatModel(module)
    res = local_sgd(flat, flat.get_vector(), plan, lr=0.1, momentum=0.5)
    ref_w, losses, _ = _reference_sgd(module, plan, 0.1, 0.5)
    torch.testing.assert_close(res.weights, ref_w, rtol=0, atol=1e-6)
    assert res.mean_loss == pytest.approx(sum(losses) / len(losses), rel=1e-6)


def test_local_sgd_zero_weight_term_is_ignored():
    module = _tiny_module(2)
    x, y = _data(seed=4)
    i, j = torch.tensor([0, 1, 2]), torch.tensor([5, 6])
    with_zero = [[[Term(x[i], y[i], 1.0), Term(x[j], y[j], 0.0)]]]
    alone = [[[Term(x[i], y[i], 1.0)]]]
    flat = FlatModel(module)
    w0 = flat.get_vector()
    r1 = local_sgd(flat, w0, with_zero, lr=0.1, momentum=0.5)
    r2 = local_sgd(flat, w0, alone, lr=0.1, momentum=0.5)
    torch.testing.assert_close(r1.weights, r2.weights, rtol=0, atol=0)


class RecordingHook(ClientTransform):
    """Identity transform that records what local_sgd passes it (its state: a list)."""

    def init(self, run):
        return {"epochs": [], "calls": []}

    def start_epoch(self, state, epoch):
        state["epochs"].append(epoch)

    def after_step(self, state, s):
        state["calls"].append((s.w_hat.clone(), s.step.clone(), s.grad.clone(), s.epoch, s.index))
        return s.w_hat


class ShiftHook(RecordingHook):
    def after_step(self, state, s):
        return super().after_step(state, s) + 0.01


def _chain(t):
    state = t.init(None)
    return [(t, state)], state


def test_local_sgd_hook_sees_sgd_step_and_gradient():
    module = _tiny_module(5)
    x, y = _data(seed=6)
    plan = _plan(x, y, INDEX_EPOCHS)
    flat = FlatModel(module)
    w0 = flat.get_vector()
    lr, mu = 0.2, 0.5
    chain, hook = _chain(RecordingHook())
    res = local_sgd(flat, w0, plan, lr=lr, momentum=mu, chain=chain)
    ref_w, _, ref_grads = _reference_sgd(module, plan, lr, mu)
    torch.testing.assert_close(res.weights, ref_w, rtol=0, atol=1e-6)
    assert hook["epochs"] == [0, 1] and len(hook["calls"]) == 6
    assert [(e, i) for *_, e, i in hook["calls"]] == [
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 0),
        (1, 1),
        (1, 2),
    ]
    # step = -lr * v with v = mu v + g (v0 = 0); w_hat = previous w + step
    v = torch.zeros_like(w0)
    w = w0
    for (w_hat, step, grad, _, _), g in zip(hook["calls"], ref_grads, strict=True):
        torch.testing.assert_close(grad, g, rtol=1e-5, atol=1e-6)
        v = mu * v + g
        torch.testing.assert_close(step, -lr * v, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(w_hat, w + step, rtol=0, atol=1e-6)
        w = w_hat


def test_local_sgd_uses_hook_output_as_next_weights():
    module = _tiny_module(8)
    x, y = _data(seed=9)
    plan = _plan(x, y, INDEX_EPOCHS[:1])
    flat = FlatModel(module)
    chain, hook = _chain(ShiftHook())
    res = local_sgd(flat, flat.get_vector(), plan, lr=0.1, momentum=0.5, chain=chain)
    calls = hook["calls"]
    for k in range(1, len(calls)):
        prev_w_hat = calls[k - 1][0]
        w_hat, step, *_ = calls[k]
        torch.testing.assert_close(w_hat, prev_w_hat + 0.01 + step, rtol=0, atol=1e-6)
    torch.testing.assert_close(res.weights, calls[-1][0] + 0.01, rtol=0, atol=0)


# --------------------------------------------------------------------------- batching


class RowShift(ClientTransform):
    """A per-client transform whose state is the client's own shift: a gradient term and a
    move after every step, both client-specific."""

    def init(self, run):
        return {"shift": float(run), "steps": 0}

    def grad(self, state, w):
        return torch.full_like(w, 0.1 * state["shift"])

    def after_step(self, state, s):
        state["steps"] += 1
        return s.w_hat + 0.01 * state["shift"]


def _rows_loss(model, w, steps):
    return torch.stack([single_loss(model, w[j : j + 1], [st])[0] for j, st in enumerate(steps)])


@pytest.mark.parametrize("threads", [1, 2])
def test_lock_step_rows_each_get_their_own_transforms(threads):
    """G clients trained in lock-step, each with its own transform state, equal each client
    trained alone: the engine hands every transform only its own row."""
    module = _tiny_module(3)
    x, y = _data(seed=4)
    flat = FlatModel(module)
    w0 = flat.get_vector()
    shifts = [0.0, 1.0, -2.0]
    t = RowShift()
    chains = [[(t, t.init(k))] for k in shifts]
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got, losses, _ = local_train(
            flat,
            torch.stack([w0 + 0.05 * k for k in shifts]),
            [iter(_plan(x, y, INDEX_EPOCHS)) for _ in shifts],
            lr=0.1,
            momentum=0.5,
            loss_fn=_rows_loss,
            chains=chains,
        )
    finally:
        torch.set_num_threads(old)
    for j, k in enumerate(shifts):
        alone = local_sgd(
            flat,
            w0 + 0.05 * k,
            _plan(x, y, INDEX_EPOCHS),
            lr=0.1,
            momentum=0.5,
            chain=[(t, t.init(k))],
        )
        torch.testing.assert_close(got[j], alone.weights, rtol=0, atol=0)
        assert chains[j][0][1]["steps"] == 6
    assert not torch.equal(got[0], got[1])


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 40),
    batch_size=st.integers(1, 12),
    epochs=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_epoch_batches_are_permutations_cut_into_batches(n, batch_size, epochs, seed):
    out = list(epoch_batches(n, batch_size, epochs, torch.Generator().manual_seed(seed)))
    assert len(out) == epochs
    nb = math.ceil(n / batch_size)
    for batches in out:
        assert len(batches) == nb
        sizes = [len(b) for b in batches]
        assert sizes[:-1] == [batch_size] * (nb - 1)
        assert sizes[-1] == n - batch_size * (nb - 1)
        assert sorted(torch.cat(batches).tolist()) == list(range(n))
    again = list(epoch_batches(n, batch_size, epochs, torch.Generator().manual_seed(seed)))
    assert [[b.tolist() for b in e] for e in out] == [[b.tolist() for b in e] for e in again]


def test_epoch_batches_reshuffle_each_epoch():
    out = list(epoch_batches(30, 7, 4, torch.Generator().manual_seed(0)))
    orders = {tuple(torch.cat(e).tolist()) for e in out}
    assert len(orders) == 4
    assert [len(b) for b in out[0]] == [7, 7, 7, 7, 2]


def _marked(n: int, offset: float):
    """Images whose single pixel encodes their index (plus offset); label = index % 3."""
    x = (torch.arange(n, dtype=torch.float32) + offset).view(n, 1)
    return x, torch.arange(n) % 3


def test_benign_plan_shape():
    x, y = _marked(23, 0.0)
    plan = list(benign_plan(x, y, 5, 3, torch.Generator().manual_seed(1)))
    assert len(plan) == 3
    for epoch in plan:
        assert len(epoch) == math.ceil(23 / 5)
        seen = []
        for step in epoch:
            assert len(step) == 1 and step[0].weight == 1.0
            idx = step[0].x.view(-1).long()
            assert torch.equal(step[0].y, y[idx])  # images stay with their labels
            seen += idx.tolist()
        assert sorted(seen) == list(range(23))


@pytest.mark.parametrize("n_mal,batch_size,epochs", [(1, 10, 10), (10, 3, 2), (7, 7, 1)])
def test_malicious_plan_alpha_zero_trains_on_dm_only(n_mal, batch_size, epochs):
    xb, yb = _marked(50, 0.0)
    xm, ym = _marked(n_mal, 1000.0)
    plan = list(
        malicious_plan(
            xb,
            yb,
            xm,
            ym,
            alpha=0.0,
            batch_size=batch_size,
            epochs=epochs,
            generator=torch.Generator().manual_seed(2),
        )
    )
    assert len(plan) == epochs
    assert sum(len(e) for e in plan) == epochs * math.ceil(n_mal / batch_size)
    for epoch in plan:
        seen = []
        for step in epoch:
            assert len(step) == 1
            (term,) = step
            assert term.weight == 1.0
            assert (term.x >= 1000).all()  # only D_M
            idx = (term.x.view(-1) - 1000).long()
            assert torch.equal(term.y, ym[idx])
            seen += idx.tolist()
        assert sorted(seen) == list(range(n_mal))


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.9])
def test_malicious_plan_mixed_terms(alpha):
    n_benign, n_mal, batch_size, epochs = 17, 5, 4, 3
    xb, yb = _marked(n_benign, 0.0)
    xm, ym = _marked(n_mal, 1000.0)
    plan = list(
        malicious_plan(
            xb,
            yb,
            xm,
            ym,
            alpha=alpha,
            batch_size=batch_size,
            epochs=epochs,
            generator=torch.Generator().manual_seed(3),
        )
    )
    assert len(plan) == epochs
    assert sum(len(e) for e in plan) == epochs * math.ceil(n_benign / batch_size)
    mal_order = []
    for epoch in plan:
        seen = []
        for step in epoch:
            assert len(step) == 2
            benign, mal = step
            assert benign.weight == alpha and mal.weight == 1.0 - alpha
            assert (benign.x < 1000).all() and (mal.x >= 1000).all()
            bidx = benign.x.view(-1).long()
            midx = (mal.x.view(-1) - 1000).long()
            assert torch.equal(benign.y, yb[bidx]) and torch.equal(mal.y, ym[midx])
            assert 1 <= len(midx) <= batch_size
            seen += bidx.tolist()
            mal_order += midx.tolist()
        assert sorted(seen) == list(range(n_benign))
    # D_M batches cycle through whole passes over D_M
    full = len(mal_order) // n_mal
    assert full >= 1
    for k in range(full):
        assert sorted(mal_order[k * n_mal : (k + 1) * n_mal]) == list(range(n_mal))

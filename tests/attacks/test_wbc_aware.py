"""The FL-WBC-aware BadNets attack (`wbc_aware`): `offmask` against a brute-force computation of
FL-WBC's curvature estimate and the kept coordinates on a tiny model, `eot`'s hook against a
`WBCStep` driven with the same noise stream, draw for draw, both modes at s = 0 against plain
BadNets bit for bit, which FL-WBC is simulated, then end to end on both engines."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import flwbc
from flwbc.attacks import ATTACKS
from flwbc.attacks.wbc_aware import wbc_threshold
from flwbc.client.transform import ClientRun, SGDStep
from flwbc.client.wbc import WBCOptions, WBCStep
from flwbc.data import Dataset
from flwbc.defenses.ldp import LocalDP
from flwbc.defenses.wbc import WBCDefense
from flwbc.models import FlatModel
from flwbc.rng import torch_generator
from flwbc.round import client_update

SEED, ROUND, LR, MOMENTUM = 3, 2, 0.1, 0.5


def tiny_dataset(n_train: int = 48) -> Dataset:
    gen = torch.Generator().manual_seed(0)
    tx = torch.randint(0, 255, (n_train, 1, 8, 8), generator=gen, dtype=torch.uint8)
    ty = torch.arange(n_train) % 4
    vx = torch.randint(0, 255, (8, 1, 8, 8), generator=gen, dtype=torch.uint8)
    return Dataset("tiny", tx, ty, vx, torch.arange(8) % 4, 4, (0.5,), (0.25,))


def tiny_model() -> FlatModel:
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 6), nn.ReLU(), nn.Linear(6, 4), nn.LogSoftmax(dim=1)
    )
    return FlatModel(module.double())


def tiny_exp(name: str = "wbc_aware", wbc: dict | None = None, **options: object):
    """A two-client experiment on 8x8 images with a 418-parameter MLP, in float64; `wbc`: the
    options of an FL-WBC deployed on the benign clients (after local DP, so the attack must
    find it by type)."""
    section = {
        "seed": SEED,
        "dtype": "float64",
        "local": {"epochs": 2, "batch_size": 8, "lr": LR, "momentum": MOMENTUM},
        "attack": {"name": name, "options": options},
    }
    cfg = flwbc.make_config(section)
    ds = tiny_dataset()
    defenses = []
    if wbc is not None:
        defenses = [
            LocalDP(cfg, LocalDP.Options()),
            WBCDefense(cfg, WBCOptions.model_validate(wbc)),
        ]
    exp = SimpleNamespace(
        cfg=cfg,
        dataset=ds,
        model=tiny_model(),
        client_indices=[np.arange(0, 24), np.arange(24, 48)],
        malicious_ids=[0, 1],
        device=torch.device("cpu"),
        dtype=torch.float64,
        defenses=defenses,
    )
    exp.attack = ATTACKS[name](cfg, ATTACKS.options(name, options))
    return exp


def w0_of(exp) -> torch.Tensor:
    return exp.model.init_vector(1).double()


# ---------------------------------------------------------------- offmask, by brute force


def brute_force_h(
    exp, c: int, w0: torch.Tensor, sim: WBCOptions
) -> tuple[list[np.ndarray], np.ndarray]:
    """Attacker c's plain BadNets training written out (SGD with momentum): FL-WBC's h of
    eq. 10 at every step that has a previous one, |ΔW_i − ΔW_{i−1}|/η (`update`) or
    |g_i − g_{i−1}| (`gradient`), the memory forgotten each epoch with `reset_each_epoch`; and
    the trained update."""
    _, plan = exp.attack.plan(exp, ROUND, c, torch_generator(SEED, "data", ROUND, c))
    w, v = w0.clone(), torch.zeros_like(w0)
    hs, prev = [], None
    for epoch in plan:
        if sim.reset_each_epoch:
            prev = None
        for (term,) in epoch:
            wg = w.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(F.nll_loss(exp.model(wg, term.x), term.y), wg)
            v = MOMENTUM * v + g
            step = -LR * v
            w = w + step
            proxy = (step if sim.hessian == "update" else g).numpy()
            if prev is not None:
                d = np.abs(proxy - prev)
                hs.append(d / LR if sim.hessian == "update" else d)
            prev = proxy
    return hs, (w - w0).numpy()


@pytest.mark.parametrize(
    ("window", "wbc", "rescale"),
    [
        (1, None, False),  # the attack's own options (paper's FL-WBC)
        (3, None, True),
        (2, {"params": "weights", "hessian": "gradient", "reset_each_epoch": True}, False),
        (1, {"noise": "scale"}, True),
    ],
)
def test_offmask_keeps_exactly_where_h_exceeds_the_median_noise(window, wbc, rescale) -> None:
    probe = tiny_exp(mode="offmask")
    c, w0 = 1, w0_of(probe)
    sim = WBCOptions.model_validate(wbc or {})
    hs, u = brute_force_h(probe, c, w0, sim)
    h = np.mean(hs[-window:], axis=0)
    # s such that the median |Υ| (b·ln 2) is the median of h: about half the coordinates kept
    b = float(np.median(h)) / math.log(2)
    s = b * math.sqrt(2) if sim.noise == "std" else b
    thr = b * math.log(2)
    if wbc is None:
        exp = tiny_exp(mode="offmask", window=window, rescale=rescale, s=s)
    else:  # the deployed FL-WBC wins over the attack's own s (here 0: keep everything)
        exp = tiny_exp(mode="offmask", window=window, rescale=rescale, s=0.0, wbc={**wbc, "s": s})
    assert exp.attack.threshold(exp) == pytest.approx(thr, rel=1e-12)

    sent, _, stats = client_update(exp, ROUND, c, True, w0)
    assert stats == {}
    bias = ~exp.model.weight_mask.numpy()
    keep = np.zeros(len(h), bool)
    for j in range(len(h)):  # eq. 9's test, entry by entry: FL-WBC leaves j alone
        keep[j] = h[j] > thr or (sim.params == "weights" and bias[j])
    want = np.where(keep, u, 0.0)
    if rescale:
        want = want * (np.linalg.norm(u) / np.linalg.norm(want))
    tie = np.isclose(h, thr, rtol=1e-9)
    assert 0.2 < keep.mean() < 0.8 and not tie.any()
    np.testing.assert_allclose(sent.numpy(), want, rtol=1e-10, atol=1e-14)
    assert np.array_equal(sent.numpy() != 0, keep & (u != 0))


def test_offmask_bias_and_threshold_rules() -> None:
    assert wbc_threshold(0.4, "std", 0.5) == pytest.approx(0.4 / math.sqrt(2) * math.log(2))
    assert wbc_threshold(0.4, "scale", 0.9) == pytest.approx(0.4 * math.log(10))
    exp = tiny_exp(mode="offmask", params="weights")
    h = torch.zeros(exp.model.num_params, dtype=torch.float64)
    keep = exp.attack.keep_mask(exp, h)
    assert torch.equal(keep, ~exp.model.weight_mask)  # FL-WBC never touches biases
    assert exp.attack.keep_mask(exp, None) is None  # no estimate: everything sent


# ---------------------------------------------------------------- eot, draw for draw


@pytest.mark.parametrize(
    "wbc", [None, {"noise": "scale", "params": "weights", "hessian": "gradient"}]
)
def test_eot_is_wbc_step_on_the_attackers_own_stream(wbc) -> None:
    exp = tiny_exp(mode="eot", s=0.3, wbc=None if wbc is None else {**wbc, "s": 0.6})
    sim = WBCOptions(s=0.3) if wbc is None else WBCOptions(**wbc, s=0.6)
    clients = [0, 1]
    attack, w0 = exp.attack, w0_of(exp)
    states = [attack.init(ClientRun(exp, ROUND, c, True, w0)) for c in clients]

    def streams(purpose: str) -> list[torch.Generator]:
        return [torch_generator(SEED, purpose, ROUND, c) for c in clients]

    mask = exp.model.weight_mask
    ref = WBCStep(sim, LR, mask, streams("wbc_aware"), [sim.s, sim.s])
    benign = WBCStep(sim, LR, mask, streams("wbc"), [sim.s, sim.s])
    gen = torch.Generator().manual_seed(7)
    p, i = exp.model.num_params, 0
    for epoch in range(2):
        for st in states:
            attack.start_epoch(st, epoch)
        ref.new_epoch()
        benign.new_epoch()
        for index in range(3):
            w_hat, step, grad = torch.randn(3, 2, p, generator=gen, dtype=torch.float64)
            step, grad = step * 0.05, grad * 0.5
            v = torch.zeros(p, dtype=torch.float64)
            got = torch.stack(
                [
                    attack.after_step(
                        st, SGDStep(w_hat[j].clone(), step[j], grad[j], v, LR, 0.0, epoch, index)
                    )
                    for j, st in enumerate(states)
                ]
            )
            assert torch.equal(got, ref(w_hat.clone(), step, grad))
            other = benign(w_hat.clone(), step, grad)
            if i > 0:  # every step but the round's first is perturbed, with its own noise
                assert 0.05 < float((got != w_hat).double().mean()) < 0.95
                assert not torch.equal(got, other)
            i += 1
    # the round's wbc_perturbed stays the benign clients'
    assert [attack.stats(st) for st in states] == [{}, {}]


@pytest.mark.parametrize("mode", ["eot", "offmask"])
def test_s_zero_is_badnets_bit_for_bit(mode: str) -> None:
    plain = tiny_exp("badnets")
    w0 = w0_of(plain)
    want = client_update(plain, ROUND, 0, True, w0)[0]
    zero = tiny_exp(mode=mode, s=0.0)
    got = client_update(zero, ROUND, 0, True, w0)[0]
    assert torch.equal(got, want)
    deployed_zero = tiny_exp(mode=mode, wbc={"s": 0.0})
    assert torch.equal(client_update(deployed_zero, ROUND, 0, True, w0)[0], want)
    attacked = client_update(tiny_exp(mode=mode, s=1.0), ROUND, 0, True, w0)[0]
    assert not torch.equal(attacked, want)


def test_simulated_fl_wbc_comes_from_the_deployed_defense() -> None:
    own = tiny_exp(s=0.3, hessian="gradient")
    assert own.attack.simulated(own) == WBCOptions(s=0.3, hessian="gradient")
    deployed = tiny_exp(s=0.3, wbc={"s": 0.9, "noise": "scale"})
    assert deployed.attack.simulated(deployed) is deployed.defenses[1].options
    # the default FL-WBC options are FL-WBC's own
    defaults = ATTACKS["wbc_aware"].Options()
    assert {k: getattr(defaults, k) for k in WBCOptions.model_fields} == WBCOptions().model_dump()

    def key(**options: object):
        e = tiny_exp(**options)
        return e.attack.group_key(e, 24)

    # every attacker's transform acts on its own row: only the plan's shape groups them
    assert key(s=0.1) == key(s=0.9) == key(mode="offmask", window=2) == key(hessian="gradient")


# ---------------------------------------------------------------- end to end, both engines


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["eot", "offmask"])
def test_wbc_aware_runs_the_same_on_both_engines(
    mode: str, real_data_dir: Path, tmp_path: Path
) -> None:
    def run(engine: str) -> flwbc.RunResult:
        return flwbc.run(
            {
                "seed": 4,
                "engine": engine,
                "dtype": "float64",  # rounding cannot flip FL-WBC's masks between engines
                "model": "mlp",
                "data": {"dir": str(real_data_dir), "train_fraction": 0.05},
                "federation": {"num_clients": 10, "clients_per_round": 5, "rounds": 2},
                "local": {"epochs": 1, "batch_size": 32},
                "defense": {"client": "wbc", "options": {"wbc": {"s": 0.05}}},
                "attack": {
                    "name": "wbc_aware",
                    "num_malicious": 2,
                    "rounds": [1, 2],
                    "options": {"mode": mode},
                },
                "output": {"dir": str(tmp_path), "name": f"{mode}-{engine}"},
                "threads": 1,
            },
            progress=False,
        )

    seq, bat = run("sequential"), run("batched")
    assert [len(r["malicious"]) for r in seq.records] == [2, 2]
    for a, b in zip(seq.records, bat.records, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], float):
                assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), k
            else:
                assert a[k] == b[k], k
        assert 0.0 <= a["backdoor_acc"] <= 1.0
    torch.testing.assert_close(seq.weights, bat.weights, rtol=0, atol=1e-12)

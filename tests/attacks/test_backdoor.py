"""Backdoor attacks (BadNets, DBA, model replacement, Neurotoxin) and the backdoor success
rate: triggers pixel by pixel against hand-written arrays, the poisoned share and labels, the
metric against a hand computation on a model whose predictions are set by hand, model
replacement's scaling and norm bound, Neurotoxin's projection against numpy and its resume,
then every attack end to end on both engines."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import flwbc
from flwbc.attacks import ATTACKS, build_attack
from flwbc.attacks.backdoor import Trigger, poison_count
from flwbc.attacks.neurotoxin import project_off, topk_mask
from flwbc.data import Dataset
from flwbc.errors import FlwbcError
from flwbc.evaluation import build_metrics
from flwbc.evaluation.backdoor import Backdoor
from flwbc.experiment import ATTACK_PREFIX, Experiment
from flwbc.models import FlatModel
from flwbc.rng import torch_generator
from flwbc.round import client_update
from flwbc.runio import load_extra, load_model
from flwbc.transforms import clip_by_norm


def attack(name: str, **options: object):
    cfg = flwbc.make_config({"attack": {"name": name, "options": options}})
    return ATTACKS[name](cfg, ATTACKS.options(name, options))


# ---------------------------------------------------------------- triggers, pixel by pixel


def test_square_bottom_right_with_margin() -> None:
    x = torch.full((2, 1, 6, 6), 7, dtype=torch.uint8)
    got = Trigger("square", size=2, location="bottom_right", margin=1, value=255).stamp(6, 6)
    want = np.full((6, 6), 7)
    want[3:5, 3:5] = 255
    out = got.apply(x)
    assert out.dtype == torch.uint8
    assert np.array_equal(out[0, 0].numpy(), want) and np.array_equal(out[1, 0].numpy(), want)
    assert int(x.max()) == 7  # the input is not modified


def test_checkerboard_top_left_writes_value_and_zero() -> None:
    x = torch.full((1, 1, 5, 5), 9, dtype=torch.uint8)
    out = Trigger("checkerboard", size=3, location="top_left", margin=0, value=200).stamp(5, 5)
    want = np.array(
        [
            [200, 0, 200, 9, 9],
            [0, 200, 0, 9, 9],
            [200, 0, 200, 9, 9],
            [9, 9, 9, 9, 9],
            [9, 9, 9, 9, 9],
        ]
    )
    assert np.array_equal(out.apply(x)[0, 0].numpy(), want)


def test_pixel_at_x_y_in_every_channel() -> None:
    x = torch.zeros((1, 3, 4, 5), dtype=torch.uint8)
    out = Trigger("pixel", x=4, y=1, value=128).stamp(4, 5).apply(x)
    want = np.zeros((4, 5))
    want[1, 4] = 128
    for ch in range(3):
        assert np.array_equal(out[0, ch].numpy(), want)


def test_corners() -> None:
    img = torch.zeros((1, 1, 4, 4), dtype=torch.uint8)
    spots = {"top_left": (0, 0), "top_right": (0, 3), "bottom_left": (3, 0), "bottom_right": (3, 3)}
    for corner, (r, c) in spots.items():
        out = Trigger("pixel", location=corner, margin=0).stamp(4, 4).apply(img)[0, 0]
        assert out[r, c] == 255 and int(out.sum()) == 255


DBA_BARS = [  # DBA's code: gap 2, size 1x4, base (0, 0)
    [(0, 0), (0, 1), (0, 2), (0, 3)],
    [(0, 6), (0, 7), (0, 8), (0, 9)],
    [(3, 0), (3, 1), (3, 2), (3, 3)],
    [(3, 6), (3, 7), (3, 8), (3, 9)],
]


def test_dba_bars_global_trigger_and_parts() -> None:
    trig = Trigger("bars", size=4, gap=2, location="top_left", margin=0, bars=4)
    x = torch.full((1, 1, 6, 12), 3, dtype=torch.uint8)
    want = np.full((6, 12), 3)
    for bar in DBA_BARS:
        for r, c in bar:
            want[r, c] = 255
    assert np.array_equal(trig.stamp(6, 12).apply(x)[0, 0].numpy(), want)
    parts = trig.parts(6, 12, 4)
    for part, bar in zip(parts, DBA_BARS, strict=True):
        assert sorted(map(tuple, part.mask.nonzero().tolist())) == bar
    union = torch.stack([p.mask for p in parts])
    assert int(union.sum(0).max()) == 1  # disjoint
    assert torch.equal(union.any(0), trig.stamp(6, 12).mask)  # union = global


def test_patch_parts_are_row_bands() -> None:
    trig = Trigger("checkerboard", size=4, margin=0)
    g = trig.stamp(8, 8)
    parts = trig.parts(8, 8, 3)
    masks = torch.stack([p.mask for p in parts])
    assert int(masks.sum(0).max()) == 1 and torch.equal(masks.any(0), g.mask)
    assert [sorted({r for r, _ in p.mask.nonzero().tolist()}) for p in parts] == [
        [4, 5],
        [6],
        [7],
    ]
    x = torch.zeros((1, 1, 8, 8), dtype=torch.uint8)
    stamped = x
    for p in parts:
        stamped = p.apply(stamped)
    assert torch.equal(stamped, g.apply(x))  # writing every part writes the global trigger
    with pytest.raises(FlwbcError, match="cannot be split into 5 parts"):
        trig.parts(8, 8, 5)


def test_trigger_that_does_not_fit_is_one_line() -> None:
    with pytest.raises(FlwbcError, match="does not fit 5x5 images"):
        Trigger("square", size=5, margin=1).stamp(5, 5)


# ------------------------------------------------------- poisoned share and relabelling


def tiny_dataset(n_train: int = 40, n_test: int = 8) -> Dataset:
    gen = torch.Generator().manual_seed(0)
    tx = torch.randint(0, 60, (n_train, 1, 8, 8), generator=gen, dtype=torch.uint8)
    ty = torch.arange(n_train) % 4
    vx = torch.randint(0, 60, (n_test, 1, 8, 8), generator=gen, dtype=torch.uint8)
    vy = torch.arange(n_test) % 4
    return Dataset("tiny", tx, ty, vx, vy, 4, (0.5,), (0.5,))


def fake_exp(att, ds: Dataset, **extra: object) -> SimpleNamespace:
    return SimpleNamespace(
        cfg=att.cfg,
        dataset=ds,
        client_indices=[np.arange(len(ds.train_y))[::-1].copy()],
        malicious_ids=[0],
        device=torch.device("cpu"),
        dtype=torch.float32,
        attack=att,
        **extra,
    )


@pytest.mark.parametrize(("fraction", "count"), [(0.25, 10), (1.0, 40), (0.3125, 13), (0.01, 0)])
def test_poisoned_share_and_labels(fraction: float, count: int) -> None:
    assert poison_count(40, fraction) == count
    ds = tiny_dataset()
    att = attack("badnets", poison_fraction=fraction, target=3, pattern="square", size=2)
    exp = fake_exp(att, ds)
    x, y = att.poisoned_data(exp, 5, 0)
    own = torch.from_numpy(exp.client_indices[0])
    raw, labels = ds.train_x[own], ds.train_y[own]
    which = torch.randperm(40, generator=torch_generator(att.cfg.seed, "poison", 5, 0))[:count]
    hit = torch.zeros(40, dtype=torch.bool)
    hit[which] = True
    want = raw.clone()
    want[hit, :, 5:7, 5:7] = 255  # 2x2 square, 1 pixel in from the bottom-right corner
    assert torch.equal(x, ds.normalize(want))
    assert torch.equal(y[hit], torch.full((count,), 3)) and torch.equal(y[~hit], labels[~hit])
    # the same round draws the same images; another round others
    assert torch.equal(att.poisoned_data(exp, 5, 0)[0], x)
    if 0 < count < 40:
        assert not torch.equal(att.poisoned_data(exp, 6, 0)[0], x)


def test_plan_trains_on_the_poisoned_set_in_the_benign_order() -> None:
    ds = tiny_dataset()
    att = attack("badnets", epochs=2)
    exp = fake_exp(att, ds)
    n, plan = att.plan(exp, 1, 0, torch_generator(0, "data", 1, 0))
    x, y = att.poisoned_data(exp, 1, 0)
    steps = [step for epoch in plan for step in epoch]
    assert n == 40 and len(steps) == 2 * 4  # batch 10 (local.batch_size), 2 epochs
    perm = torch.randperm(40, generator=torch_generator(0, "data", 1, 0))
    assert torch.equal(steps[0][0].x, x[perm[:10]]) and torch.equal(steps[0][0].y, y[perm[:10]])


def test_dba_attacker_i_uses_part_i_mod_parts() -> None:
    ds = tiny_dataset()
    att = attack("dba", parts=2, size=2, gap=1)
    exp = fake_exp(att, ds)
    exp.malicious_ids = [4, 7, 9]
    parts = att.trigger().parts(8, 8, 2)
    assert [att.part(exp, c) for c in (4, 7, 9)] == [0, 1, 0]
    for c, k in ((4, 0), (7, 1), (9, 0)):
        assert torch.equal(att.local_stamp(exp, 1, c).mask, parts[k].mask)
    full = att.test_trigger(exp)
    assert torch.equal(full, att.trigger().stamp(8, 8).apply(ds.test_x))
    assert torch.equal(full[:, 0, 0, 0:2], torch.full((8, 2), 255, dtype=torch.uint8))
    assert torch.equal(full[:, 0, 0, 3:5], torch.full((8, 2), 255, dtype=torch.uint8))


# --------------------------------------------------------- backdoor success rate by hand


def test_backdoor_success_rate_by_hand() -> None:
    # 4x4 images; the trigger is one pixel (3, 3) = 255, normalised to +1 (mean 0.5, std 0.5)
    test_x = torch.zeros((8, 1, 4, 4), dtype=torch.uint8)
    x00 = [255, 0, 0, 0, 255, 0, 255, 0]
    test_x[:, 0, 0, 0] = torch.tensor(x00, dtype=torch.uint8)
    test_y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    ds = Dataset("tiny", test_x, test_y, test_x, test_y, 3, (0.5,), (0.5,))
    module = nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.LogSoftmax(dim=-1))
    model = FlatModel(module)
    weight = torch.zeros(3, 16)
    weight[0, 0] = 2.0  # class 0: 2·x[0,0]
    weight[2, 15] = 3.0  # class 2 (target): 3·x[3,3] − 1.5
    bias = torch.tensor([0.0, 0.0, -1.5])
    w = torch.cat([weight.reshape(-1), bias])
    att = attack("badnets", pattern="pixel", x=3, y=3, target=2)
    exp = fake_exp(att, ds, model=model)
    exp.cfg = flwbc.make_config({"attack": {"name": "badnets"}, "eval": {"batch_size": 3}})
    # by hand: triggered, class 0 scores +2 where x[0,0] = 255 (else −2), class 1 scores 0 and
    # the target 1.5; non-target images 0, 1, 3, 4, 6, 7 have x[0,0] = 255, 0, 0, 255, 255, 0
    assert Backdoor(None).measure(exp, w, 1) == {"backdoor_acc": 0.5}
    # and in numpy from the same arrays
    xt = test_x.numpy().astype(float).copy()
    xt[:, 0, 3, 3] = 255
    logits = ((xt / 255 - 0.5) / 0.5).reshape(8, 16) @ weight.numpy().T + bias.numpy()
    keep = test_y.numpy() != 2
    assert np.mean(logits.argmax(1)[keep] == 2) == 0.5
    # a run whose attack has no trigger: not measured
    exp.attack = attack("sign_flip")
    assert Backdoor(None).measure(exp, w, 1) == {}


def test_backdoor_metric_only_in_backdoor_runs() -> None:
    def names(attack_section: dict) -> list[str]:
        cfg = flwbc.make_config({"attack": attack_section})
        return [m.name for m in build_metrics(cfg.eval.metrics, build_attack(cfg))]

    for name in ("badnets", "dba", "model_replacement", "neurotoxin"):
        assert names({"name": name}) == ["accuracy", "target", "backdoor"]
    assert names({"name": "targeted"}) == ["accuracy", "target"]
    assert names({"name": "label_flip"}) == ["accuracy", "target"]
    assert names({"name": "badnets", "enabled": False}) == ["accuracy", "target"]
    cfg = flwbc.make_config({"attack": {"name": "badnets"}, "eval": {"metrics": ["backdoor"]}})
    assert [m.name for m in build_metrics(cfg.eval.metrics, build_attack(cfg))].count(
        "backdoor"
    ) == 1


# ------------------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("badnets", {"poison_fraction": 0}, "option poison_fraction = 0"),
        ("badnets", {"x": 3}, "give both x and y"),
        ("badnets", {"pattern": "star"}, "option pattern = 'star'"),
        ("badnets", {"value": 300}, "option value = 300"),
        ("dba", {"parts": 0}, "option parts = 0"),
        ("model_replacement", {"scale": -2}, "option scale"),
        ("model_replacement", {"norm_bound": 0}, "option norm_bound = 0"),
        ("neurotoxin", {"topk": 100}, "option topk = 100"),
        ("neurotoxin", {"mask": "random"}, "option mask = 'random'"),
        ("neurotoxin", {"k": 1}, "has no option k"),
    ],
)
def test_bad_options_are_one_line(name: str, options: dict, message: str) -> None:
    with pytest.raises(FlwbcError, match=message) as err:
        ATTACKS.options(name, options)
    assert "\n" not in str(err.value)


def test_neurotoxin_refuses_flower_without_past_models() -> None:
    cfg = flwbc.make_config({"engine": "flower", "attack": {"name": "neurotoxin"}})
    with pytest.raises(FlwbcError, match="Flower's ClientApps do not see"):
        flwbc.attacks.build_attack(cfg)
    cfg = flwbc.make_config(
        {
            "engine": "flower",
            "attack": {"name": "neurotoxin", "options": {"mask": "clean_gradient"}},
        }
    )
    assert flwbc.attacks.build_attack(cfg) is not None


def test_target_outside_the_classes_is_one_line() -> None:
    att = attack("badnets", target=7)
    with pytest.raises(FlwbcError, match="target 7 outside 0..3 of fmnist"):
        att.poisoned_data(fake_exp(att, tiny_dataset()), 1, 0)


# ------------------------------------------------------- on a small real-data experiment


def small(real_data_dir: Path, name: str, **options: object) -> dict:
    return {
        "seed": 5,
        "model": "mlp",  # fast to evaluate: every round measures 19k test images
        "data": {"dir": str(real_data_dir), "train_fraction": 0.02},
        "federation": {"num_clients": 10, "clients_per_round": 5, "rounds": 3},
        "local": {"epochs": 1, "batch_size": 32},
        "attack": {"name": name, "num_malicious": 2, "rounds": [1, 2, 3], "options": options},
        "threads": 1,
    }


def prepared(real_data_dir: Path, name: str, **options: object) -> Experiment:
    return Experiment.prepare(flwbc.make_config(small(real_data_dir, name, **options)))


def test_model_replacement_scales_by_gamma_and_bounds_the_norm(real_data_dir: Path) -> None:
    plain = prepared(real_data_dir, "badnets")
    w = plain.initial_weights()
    c = plain.malicious_ids[0]
    trained, _, _ = client_update(plain, 1, c, True, w)

    auto = prepared(real_data_dir, "model_replacement")
    assert auto.attack.gamma() == 5.0  # clients per round / server lr 1
    got, _, _ = client_update(auto, 1, c, True, w)
    assert torch.equal(got, trained * 5.0)
    fixed = prepared(real_data_dir, "model_replacement", scale=2.5)
    assert torch.equal(client_update(fixed, 1, c, True, w)[0], trained * 2.5)

    bound = 0.2 * float(got.norm())  # the constraint binds
    bounded = prepared(real_data_dir, "model_replacement", norm_bound=bound)
    sent, _, _ = client_update(bounded, 1, c, True, w)
    assert float(sent.norm()) <= bound * (1 + 1e-5)
    assert float(sent.norm()) >= bound * 0.99  # the attacker uses its whole budget
    clipped, _ = clip_by_norm(sent.unsqueeze(0), bound)
    torch.testing.assert_close(clipped[0], sent, rtol=1e-5, atol=0)  # clipping does not catch it
    loose = prepared(real_data_dir, "model_replacement", norm_bound=10 * float(got.norm()))
    assert torch.equal(client_update(loose, 1, c, True, w)[0], got)  # an idle bound: no change


def test_topk_mask_against_numpy_argsort() -> None:
    rng = np.random.default_rng(0)
    u = rng.permutation(1000).astype(np.float32) - 500.0  # distinct magnitudes except ±
    u[u == 0] = 0.25
    u = u + rng.uniform(0.01, 0.4, 1000).astype(np.float32) * np.sign(u)
    for topk, k in ((1.0, 10), (2.5, 25), (50.0, 500)):
        masked = topk_mask(torch.from_numpy(u), topk).numpy()
        want = np.zeros(1000, bool)
        want[np.argsort(-np.abs(u), kind="stable")[:k]] = True
        assert masked.sum() == k and np.array_equal(masked, want)
        g = torch.from_numpy(rng.normal(size=1000).astype(np.float32))
        projected = project_off(g, torch.from_numpy(masked)).numpy()
        assert np.all(projected[want] == 0) and np.array_equal(projected[~want], g.numpy()[~want])


def manual_masked_sgd(exp: Experiment, t: int, c: int, w0: torch.Tensor, masked: torch.Tensor):
    """Local SGD with momentum on the gradient projected off `masked`, written out."""
    loc = exp.cfg.local
    _, plan = exp.attack.plan(exp, t, c, torch_generator(exp.cfg.seed, "data", t, c))
    w, v = w0.clone(), torch.zeros_like(w0)
    for epoch in plan:
        for (term,) in epoch:
            wg = w.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(F.nll_loss(exp.model(wg, term.x), term.y), wg)
            v = loc.momentum * v + project_off(g, masked)
            w = w - loc.lr * v
    return w - w0


def test_neurotoxin_leaves_the_top_coordinates_of_the_last_update(real_data_dir: Path) -> None:
    exp = prepared(real_data_dir, "neurotoxin", topk=5.0)
    w0 = exp.initial_weights()
    c = exp.malicious_ids[0]
    att = exp.attack
    # round 1: no previous global update, plain backdoor training
    att.observe(exp, 0, w0)
    assert att.update is None
    first, _, _ = client_update(exp, 1, c, True, w0)
    plain = prepared(real_data_dir, "badnets")
    assert torch.equal(first, client_update(plain, 1, c, True, w0)[0])
    # after a round the last global update is known; its top 5% are left alone
    w1 = w0 + first / 5
    att.observe(exp, 1, w1)
    assert torch.equal(att.update, w1 - w0)
    update, _, _ = client_update(exp, 2, c, True, w1)
    masked = topk_mask(w1 - w0, 5.0)
    want = np.zeros(len(w0), bool)
    want[np.argsort(-np.abs((w1 - w0).numpy()), kind="stable")[: int(0.05 * len(w0) + 0.5)]] = True
    assert np.array_equal(masked.numpy(), want)
    assert bool((update[masked] == 0).all()) and float((update[~masked] != 0).float().mean()) > 0.9
    torch.testing.assert_close(update, manual_masked_sgd(exp, 2, c, w1, masked), rtol=0, atol=1e-6)


def test_neurotoxin_clean_gradient_mask(real_data_dir: Path) -> None:
    exp = prepared(real_data_dir, "neurotoxin", mask="clean_gradient", topk=2.0)
    w0 = exp.initial_weights()
    c = exp.malicious_ids[0]
    x, y = exp.client_data(c)
    wg = w0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.nll_loss(exp.model(wg, x), y), wg)
    masked = exp.attack.masked(exp, c, w0)
    assert torch.equal(masked, topk_mask(g, 2.0))
    update, _, _ = client_update(exp, 1, c, True, w0)
    assert bool((update[masked] == 0).all())


@pytest.mark.slow
def test_neurotoxin_resume_equals_uninterrupted(real_data_dir: Path, tmp_path: Path) -> None:
    # round 2 projects off the top coordinates of θ_1 − θ_0, which the resumed run must restore
    def cfg(name: str) -> dict:
        c = small(real_data_dir, "neurotoxin")
        c["federation"]["rounds"] = 2
        c["attack"]["rounds"] = [1, 2]
        return {**c, "output": {"dir": str(tmp_path), "name": name}}

    full = flwbc.run(cfg("full"), progress=False)
    part = flwbc.run(cfg("part"), progress=False, callback=lambda rec: False)
    assert part.summary["rounds_done"] == 1
    ckpt = part.run_dir / "checkpoint.safetensors"
    state = load_extra(ckpt, ATTACK_PREFIX)
    exp = Experiment.prepare(flwbc.make_config(cfg("x")))
    w1, _ = load_model(ckpt, exp.model)
    assert set(state) == {"prev", "update"} and torch.equal(state["prev"], w1)
    assert torch.equal(state["update"], w1 - exp.initial_weights())
    resumed = flwbc.run(resume=part.run_dir, progress=False)
    assert (resumed.run_dir / "rounds.jsonl").read_bytes() == (
        full.run_dir / "rounds.jsonl"
    ).read_bytes()
    assert torch.equal(resumed.weights, full.weights)
    final = load_extra(resumed.run_dir / "checkpoint.safetensors", ATTACK_PREFIX)
    assert torch.equal(final["prev"], full.weights)
    assert torch.equal(final["update"], full.weights - w1)
    assert all(r["backdoor_acc"] is not None for r in full.records)


ENGINE_CASES = [  # every attack, each after-step transform (the mask in round 2), on both engines
    ("badnets", {}),
    ("dba", {}),
    ("model_replacement", {"norm_bound": 1.0}),
    ("neurotoxin", {}),
    ("neurotoxin", {"mask": "clean_gradient"}),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "options"), ENGINE_CASES)
def test_backdoor_attacks_run_on_both_engines(
    name: str, options: dict, real_data_dir: Path, tmp_path: Path
) -> None:
    def run(engine: str) -> flwbc.RunResult:
        return flwbc.run(
            {
                "seed": 4,
                "engine": engine,
                "model": "mlp",
                "data": {"dir": str(real_data_dir), "train_fraction": 0.05},
                "federation": {"num_clients": 10, "clients_per_round": 5, "rounds": 2},
                "local": {"epochs": 1, "batch_size": 32},
                "attack": {"name": name, "num_malicious": 2, "rounds": [1, 2], "options": options},
                "output": {"dir": str(tmp_path), "name": f"{name}-{engine}"},
                "threads": 1,
            },
            progress=False,
        )

    seq, bat = run("sequential"), run("batched")
    for res in (seq, bat):
        assert [len(r["malicious"]) for r in res.records] == [2, 2]
        assert all(0.0 <= r["backdoor_acc"] <= 1.0 for r in res.records)
        assert "backdoor_acc" in res.columns()
        # the summary counts rounds from the window's end (round 2, the last) until success < level
        assert res.summary["final_backdoor_acc"] == res.records[-1]["backdoor_acc"]
        for level in ("0.5", "0.1"):
            (w,) = res.summary["backdoor_mitigation"][level]
            low = res.records[-1]["backdoor_acc"] < float(level)
            assert (w["round"], w["last_round"], w["rounds"], w["observed"]) == (
                1,
                2,
                0 if low else None,
                0,
            )
    for a, b in zip(seq.records, bat.records, strict=True):
        assert a["backdoor_acc"] == pytest.approx(b["backdoor_acc"], abs=2e-3)
    assert torch.allclose(seq.weights, bat.weights, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("badnets", {"target": 12}, "target 12 outside 0..9 of fmnist"),
        ("dba", {"pattern": "pixel", "parts": 4}, "cannot be split into 4 parts"),
        ("badnets", {"size": 40}, "does not fit 28x28 images"),
    ],
)
def test_backdoor_options_that_do_not_fit_fail_before_any_round(
    real_data_dir: Path, name: str, options: dict, message: str
) -> None:
    cfg = flwbc.make_config(
        {
            "data": {"dir": str(real_data_dir), "train_fraction": 0.01},
            "attack": {"name": name, "num_malicious": 2, "options": options},
        }
    )
    with pytest.raises(FlwbcError, match=message):
        Experiment.prepare(cfg)

"""LeadFL's backdoor pieces: the `nine_pixel` trigger against the official pattern tensor and
placement written out here, and the backdoor metric's `include_target` option on a tiny
hand-made case (and through a config, for `backdoor` and `trigger`)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import flwbc
from flwbc.attacks import ATTACKS, build_attack
from flwbc.attacks.backdoor import Trigger, poison
from flwbc.data import Dataset
from flwbc.evaluation import build_metrics
from flwbc.evaluation.backdoor import Backdoor
from flwbc.evaluation.trigger import TriggerBaseline
from flwbc.models import FlatModel

# ---------------------------------------------------------------- the official pattern

# Written out from chaoyitud/LeadFL at 06ecc989de259eea4402c154ed4599a1a20fd3bd,
# backdoors/synthesizers/pattern_synthesizer.py:14-29 (pattern_tensor, x_top = 3 the row,
# y_top = 23 the column, mask_value = -10) and make_pattern, :44-60 (the pattern placed into a
# full_image of mask_value, mask = full_image != mask_value, pattern = the task's normalisation
# of full_image: MNIST's (0.1307,), (0.3081,), backdoors/tasks/mnist_task.py:10).
OFFICIAL_PATTERN = torch.tensor(
    [
        [1.0, 0.0, 1.0],
        [-10.0, 1.0, -10.0],
        [-10.0, -10.0, 0.0],
        [-10.0, 1.0, -10.0],
        [1.0, 0.0, 1.0],
    ]
)


def official_make_pattern(input_shape=(1, 28, 28), x_top: int = 3, y_top: int = 23):
    full_image = torch.zeros(input_shape)
    full_image.fill_(-10)
    x_bot = x_top + OFFICIAL_PATTERN.shape[0]
    y_bot = y_top + OFFICIAL_PATTERN.shape[1]
    full_image[:, x_top:x_bot, y_top:y_bot] = OFFICIAL_PATTERN
    mask = 1 * (full_image != -10)
    pattern = (full_image - 0.1307) / 0.3081  # transforms.Normalize((0.1307,), (0.3081,))
    return pattern, mask


def test_nine_pixel_at_leadfl_place_is_the_official_pattern() -> None:
    pattern, mask = official_make_pattern()
    stamp = Trigger("nine_pixel", x=23, y=3).stamp(28, 28)
    assert torch.equal(stamp.mask, mask[0].bool())
    assert int(stamp.mask.sum()) == 9
    # flwbc writes raw 255 / 0; normalised as Fashion-MNIST is (MNIST's statistics) they are
    # the official trigger's values, 2.8215 and -0.4242
    gen = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (4, 1, 28, 28), generator=gen, dtype=torch.uint8)
    ds = Dataset("f", raw, torch.zeros(4), raw, torch.zeros(4), 10, (0.1307,), (0.3081,))
    ours = ds.normalize(stamp.apply(raw))
    m = mask.bool().expand(4, 1, 28, 28)
    torch.testing.assert_close(ours[m], pattern.expand(4, 1, 28, 28)[m])
    assert sorted({round(float(v), 4) for v in ours[m]}) == [-0.4242, 2.8215]
    # outside the mask the image is untouched (officially (1 - mask)·x keeps it too)
    assert torch.equal(stamp.apply(raw)[~m], raw[~m])
    # the official pixels, cell by cell: white (1) -> 255, black (0) -> 0
    for r in range(5):
        for c in range(3):
            cell = float(OFFICIAL_PATTERN[r, c])
            assert bool(stamp.mask[3 + r, 23 + c]) == (cell != -10)
            if cell != -10:
                assert int(stamp.values[3 + r, 23 + c]) == int(cell) * 255


def test_levels_on_fmnist_raw_are_the_official_trigger_on_unnormalised_images(
    real_data_dir,
) -> None:
    """LeadFL's code: `ToTensor` images in [0, 1] (fmnist_raw) with the pattern written after
    MNIST's normalisation; officially input·(1 − mask) + pattern·mask."""
    pattern, mask = official_make_pattern()
    ds = flwbc.data.get_dataset("fmnist_raw").load(str(real_data_dir))
    plain = flwbc.data.get_dataset("fmnist").load(str(real_data_dir))
    raw = ds.test_x[:16]
    assert torch.equal(raw, plain.test_x[:16])
    torch.testing.assert_close(ds.normalize(raw), raw.float() / 255.0, rtol=0, atol=0)
    levels = (float(pattern[mask.bool()].max()), float(pattern[mask.bool()].min()))
    opts = ATTACKS.options(
        "badnets", {"pattern": "nine_pixel", "x": 23, "y": 3, "target": 8, "levels": levels}
    )
    cfg = flwbc.make_config({"data": {"name": "fmnist_raw"}})
    att = ATTACKS["badnets"](cfg, opts)
    exp = SimpleNamespace(
        cfg=cfg,
        dataset=ds,
        malicious_ids=[0],
        client_indices={0: np.arange(16)},
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
    stamp = att.written(exp, opts.trigger().stamp(28, 28))
    ours = ds.normalize(stamp.apply(raw))
    official = raw.float() / 255.0 * (1 - mask) + pattern * mask
    torch.testing.assert_close(ours, official, rtol=0, atol=1e-6)
    # what the backdoor metric tests and what the blind attacker trains on carry it too
    tested = ds.normalize(att.test_trigger(exp)[:16])
    torch.testing.assert_close(tested, official, rtol=0, atol=1e-6)
    clean, labels, triggered = att.blind_data(exp, 1, 0)
    train_raw = ds.train_x[:16]
    torch.testing.assert_close(clean, train_raw.float() / 255.0, rtol=0, atol=0)
    torch.testing.assert_close(
        triggered, train_raw.float() / 255.0 * (1 - mask) + pattern * mask, rtol=0, atol=1e-6
    )
    assert torch.equal(labels, ds.train_y[:16])
    # the official contrast: white 2.8x the brightest clean pixel, where plain 255 gives 1.0
    assert float(ours.max()) == pytest.approx(2.8215, abs=1e-4)
    assert float(ds.normalize(opts.trigger().stamp(28, 28).apply(raw)).max()) == 1.0
    # poisoned training images carry the same floats
    x, y = poison(raw, torch.zeros(16, dtype=torch.long), torch.arange(4), stamp, 8)
    assert x.dtype == torch.float32 and y[:4].tolist() == [8] * 4
    torch.testing.assert_close(ds.normalize(x[:4]), official[:4], rtol=0, atol=1e-6)
    assert torch.equal(x[4:], raw[4:].float())


def test_nine_pixel_white_is_value_and_it_places_like_the_other_patterns() -> None:
    stamp = Trigger("nine_pixel", location="top_left", margin=0, value=200).stamp(6, 4)
    want = np.array(
        [
            [200, 0, 200, 7],
            [7, 200, 7, 7],
            [7, 7, 0, 7],
            [7, 200, 7, 7],
            [200, 0, 200, 7],
            [7, 7, 7, 7],
        ]
    )
    x = torch.full((1, 3, 6, 4), 7, dtype=torch.uint8)
    out = stamp.apply(x)
    for ch in range(3):
        assert np.array_equal(out[0, ch].numpy(), want)
    # bottom-right by default, a margin of 1; the 5x3 box must fit
    assert Trigger("nine_pixel").stamp(28, 28).mask[22:27, 24:27].sum() == 9
    with pytest.raises(flwbc.errors.FlwbcError, match="does not fit 4x4 images"):
        Trigger("nine_pixel", margin=0).stamp(4, 4)


def test_nine_pixel_parts_are_its_rows() -> None:
    trig = Trigger("nine_pixel", x=23, y=3)
    parts = trig.parts(28, 28, 5)
    assert [int(p.mask.sum()) for p in parts] == [3, 1, 1, 1, 3]
    masks = torch.stack([p.mask for p in parts])
    assert int(masks.sum(0).max()) == 1 and torch.equal(masks.any(0), trig.stamp(28, 28).mask)


def test_nine_pixel_is_an_option_of_the_backdoor_attacks() -> None:
    opts = ATTACKS.options("badnets", {"pattern": "nine_pixel", "x": 23, "y": 3, "target": 8})
    assert opts.trigger() == Trigger("nine_pixel", x=23, y=3)


# ---------------------------------------------------------------- include_target by hand


def _hand_case(include: bool | None):
    """8 4x4 images, 3 classes, target 2; the trigger is one pixel (3, 3) = 255 (normalised to
    +1 with mean 0.5, std 0.5). Triggered, class 0 scores +2 where x[0,0] = 255 (else -2),
    class 1 scores 0 and the target 1.5: images with x[0,0] = 255 go to class 0, the others to
    the target."""
    test_x = torch.zeros((8, 1, 4, 4), dtype=torch.uint8)
    test_x[:, 0, 0, 0] = torch.tensor([255, 0, 0, 0, 255, 0, 255, 0], dtype=torch.uint8)
    test_y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    ds = Dataset("tiny", test_x, test_y, test_x, test_y, 3, (0.5,), (0.5,))
    model = FlatModel(nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.LogSoftmax(dim=-1)))
    weight = torch.zeros(3, 16)
    weight[0, 0] = 2.0
    weight[2, 15] = 3.0
    w = torch.cat([weight.reshape(-1), torch.tensor([0.0, 0.0, -1.5])])
    cfg = flwbc.make_config(
        {
            "attack": {"name": "badnets", "options": {"pattern": "pixel", "x": 3, "y": 3}},
            "eval": {"batch_size": 3},
        }
    )
    att = ATTACKS["badnets"](
        cfg, ATTACKS.options("badnets", {"pattern": "pixel", "x": 3, "y": 3, "target": 2})
    )
    exp = SimpleNamespace(
        cfg=cfg,
        dataset=ds,
        model=model,
        attack=att,
        malicious_ids=[],
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
    options = None if include is None else Backdoor.Options(include_target=include)
    return Backdoor(options).measure(exp, w, 1)["backdoor_acc"], exp, w


def test_include_target_scores_every_test_image_by_hand() -> None:
    # non-target images 0, 1, 3, 4, 6, 7 (x[0,0] = 255, 0, 0, 255, 255, 0): 3 of 6 hit;
    # the target-class images 2 and 5 (x[0,0] = 0) are both predicted as the target: 5 of 8
    assert _hand_case(None)[0] == 0.5  # the default: today's behaviour
    assert _hand_case(False)[0] == 0.5
    assert _hand_case(True)[0] == 5 / 8


def test_include_target_as_the_official_backdoor_test_counts() -> None:
    # fltk/core/federator.py:343-382 (LeadFL at 06ecc98): every test image triggered, labels
    # all the target, accuracy = correct / total; here with the hand case's model and images
    acc, exp, w = _hand_case(True)
    triggered = exp.attack.test_trigger(exp)
    out = exp.model(w, exp.dataset.normalize(triggered))
    labels = torch.full((8,), 2)
    assert acc == (out.argmax(1) == labels).sum().item() / labels.size(0)


def test_include_target_through_a_config() -> None:
    cfg = flwbc.make_config(
        {
            "attack": {"name": "badnets"},
            "eval": {"metrics": [{"name": "backdoor", "options": {"include_target": True}}]},
        }
    )
    metrics = build_metrics(cfg.eval.metrics, build_attack(cfg))
    (bd,) = [m for m in metrics if m.name == "backdoor"]  # the attack adds no second one
    assert bd.options.include_target is True
    cfg = flwbc.make_config({"attack": {"name": "badnets"}})
    (bd,) = [m for m in build_metrics(cfg.eval.metrics, build_attack(cfg)) if m.name == "backdoor"]
    assert bd.options.include_target is False
    base = TriggerBaseline(TriggerBaseline.Options(attacks=["badnets"], include_target=True))
    assert base.options.include_target is True
    assert (
        TriggerBaseline(TriggerBaseline.Options(attacks=["badnets"])).options.include_target
        is False
    )


def test_trigger_baseline_include_target_by_hand() -> None:
    _, exp, w = _hand_case(None)
    exp.attack = None
    refs = {
        "attacks": [
            {"name": "badnets", "options": {"pattern": "pixel", "x": 3, "y": 3, "target": 2}}
        ]
    }
    for include, want in ((False, 0.5), (True, 5 / 8)):
        metric = TriggerBaseline(TriggerBaseline.Options(**refs, include_target=include))
        assert metric.measure(exp, w, 1) == {"backdoor_acc.badnets": want}

"""Paper §7.1 metrics against numpy computations and hand-written round records."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn

from flwbc.metrics import evaluate, mitigation_rounds, target_metrics
from flwbc.models import FlatModel


def _np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


# --------------------------------------------------------------------------- target_metrics

W = np.array([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0], [0, 0, 0]])
B = np.array([0.0, 0.0, 0.0, 0.5])
X_MAL = np.array(
    [
        [1.0, 0, 0],  # logits 2 0 0 .5   -> argmax 0
        [0, 1.0, 0],  # -> 1
        [0, 0, 1.0],  # -> 2
        [0, 0, 0],  # 0 0 0 .5 -> 3
        [0.2, 0.1, 0],  # .4 .2 0 .5 -> 3
    ]
)


def _linear_flat_model() -> tuple[FlatModel, torch.Tensor]:
    lin = nn.Linear(3, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(W))
        lin.bias.copy_(torch.tensor(B))
    flat = FlatModel(nn.Sequential(lin, nn.LogSoftmax(dim=1)))
    return flat, flat.get_vector()


@pytest.mark.parametrize(
    "targets,hand_acc",
    [
        ([0, 2, 2, 3, 1], 3 / 5),  # argmax 0,1,2,3,3: hits at images 0, 2, 3
        ([1, 0, 3, 2, 0], 0.0),
        ([0, 1, 2, 3, 3], 1.0),
        ([3, 3, 3, 3, 3], 2 / 5),
    ],
)
def test_target_metrics_many_images(targets, hand_acc):
    flat, w = _linear_flat_model()
    logits = X_MAL @ W.T + B
    p = np.exp(_np_log_softmax(logits))
    ref_conf = np.mean([p[i, t] for i, t in enumerate(targets)])
    ref_acc = np.mean(p.argmax(1) == np.array(targets))
    assert ref_acc == pytest.approx(hand_acc)
    conf, acc = target_metrics(
        flat, w, torch.tensor(X_MAL, dtype=torch.float32), torch.tensor(targets)
    )
    assert conf == pytest.approx(ref_conf, rel=1e-6)
    assert acc == pytest.approx(hand_acc)


def test_target_metrics_single_image():
    flat, w = _linear_flat_model()
    x = torch.tensor(X_MAL[4:5], dtype=torch.float32)
    p = np.exp(_np_log_softmax(X_MAL[4:5] @ W.T + B))[0]
    assert target_metrics(flat, w, x, torch.tensor([1])) == pytest.approx((p[1], 0.0), rel=1e-6)
    assert target_metrics(flat, w, x, torch.tensor([3])) == pytest.approx((p[3], 1.0), rel=1e-6)


def test_target_metrics_uses_given_weights_not_module_state():
    flat, w = _linear_flat_model()
    w2 = torch.zeros_like(w)  # all logits 0: uniform over 4 classes
    conf, acc = target_metrics(
        flat, w2, torch.tensor(X_MAL, dtype=torch.float32), torch.tensor([0, 1, 2, 3, 0])
    )
    assert conf == pytest.approx(0.25, rel=1e-6)


# --------------------------------------------------------------------------- evaluate


class TinyConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x):
        return torch.log_softmax(self.fc(torch.relu(self.conv(x)).flatten(1)), dim=1)


def _np_tiny_conv(x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """The same network in float64 numpy: 3x3 conv with padding 1, ReLU, linear, log-softmax."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = sliding_window_view(xp, (3, 3), axis=(2, 3))  # N C H W 3 3
    h = np.einsum("nchwij,ocij->nohw", patches, params["conv.weight"])
    h = np.maximum(h + params["conv.bias"][None, :, None, None], 0.0)
    logits = h.reshape(len(x), -1) @ params["fc.weight"].T + params["fc.bias"]
    return _np_log_softmax(logits)


@pytest.mark.parametrize("batch_size", [5, 7, 500])
def test_evaluate_against_numpy(batch_size):
    torch.manual_seed(0)
    flat = FlatModel(TinyConv())
    w = flat.init_vector(11) * 3  # larger weights: a confident, non-trivial classifier
    g = torch.Generator().manual_seed(1)
    n = 23
    x = torch.randint(0, 256, (n, 2, 4, 4), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 5, (n,), generator=g)

    def normalize(t):
        assert t.dtype == torch.uint8
        return (t.float() - 120.0) / 60.0

    acc, loss = evaluate(flat, w, x, y, normalize, batch_size=batch_size)

    params = {k: v.double().numpy() for k, v in flat.unflatten(w).items()}
    logp = _np_tiny_conv((x.numpy().astype(np.float64) - 120.0) / 60.0, params)
    ref_acc = np.mean(logp.argmax(1) == y.numpy())
    ref_loss = -np.mean(logp[np.arange(n), y.numpy()])
    assert 0 < ref_acc < 1  # a meaningful case
    assert acc == pytest.approx(ref_acc, abs=1e-12)
    assert loss == pytest.approx(ref_loss, rel=1e-5)


def test_evaluate_flat_inputs():
    flat, w = _linear_flat_model()
    x = torch.tensor([[10, 0, 0], [0, 10, 0], [0, 0, 10], [1, 1, 1], [0, 0, 0]], dtype=torch.uint8)
    y = torch.tensor([0, 0, 2, 3, 3])
    acc, loss = evaluate(flat, w, x, y, lambda t: t.float() / 10.0, batch_size=2)
    logp = _np_log_softmax((x.numpy() / 10.0) @ W.T + B)
    assert acc == pytest.approx(np.mean(logp.argmax(1) == y.numpy()))
    assert loss == pytest.approx(-np.mean(logp[np.arange(5), y.numpy()]), rel=1e-6)


# --------------------------------------------------------------------------- mitigation_rounds


def rec(t, adv=False, conf=0.9, acc=1.0, test_acc=0.8):
    return {
        "round": t,
        "adversarial": adv,
        "target_conf": conf,
        "target_acc": acc,
        "test_acc": test_acc,
    }


def test_mitigated_after_one_round():
    records = [
        rec(1, conf=0.1, acc=0.0),
        rec(2, adv=True, conf=0.95, acc=1.0),
        rec(3, conf=0.3, acc=1.0),  # confidence below 0.5, still classified as target
        rec(4, conf=0.2, acc=0.0),
        rec(5, conf=0.2, acc=0.0),
    ]
    (m,) = mitigation_rounds(records)
    assert m == {
        "round": 2,
        "by_confidence": 1,
        "by_accuracy": 2,
        "rounds": 1,
        "sustained": 1,
        "observed": 3,
    }


def test_never_mitigated_in_window():
    records = [rec(1), rec(2, adv=True)] + [rec(t, conf=0.7) for t in range(3, 9)]
    (m,) = mitigation_rounds(records)
    assert m["round"] == 2
    assert m["by_confidence"] is None and m["by_accuracy"] is None and m["rounds"] is None
    assert m["observed"] == 6


def test_threshold_is_strict():
    records = [rec(1, adv=True, conf=0.9), rec(2, conf=0.5), rec(3, conf=0.49)]
    (m,) = mitigation_rounds(records)
    assert m["by_confidence"] == 2
    (m,) = mitigation_rounds(records, threshold=0.6)
    assert m["by_confidence"] == 1


def test_attack_never_took_hold():
    records = [rec(1), rec(2, adv=True, conf=0.2, acc=0.0), rec(3, conf=0.9, acc=1.0)]
    (m,) = mitigation_rounds(records)
    assert m["rounds"] == 0 and m["by_confidence"] == 0 and m["by_accuracy"] == 0
    assert m["observed"] == 1


def test_accuracy_criterion_earlier_than_confidence():
    records = [
        rec(1, adv=True, conf=0.99, acc=1.0, test_acc=0.85),
        rec(2, conf=0.7, acc=0.1, test_acc=0.85),  # 0.1 < 1 - 0.85 = 0.15
        rec(3, conf=0.6, acc=0.1, test_acc=0.85),
        rec(4, conf=0.4, acc=0.0, test_acc=0.85),
    ]
    (m,) = mitigation_rounds(records)
    assert (m["by_accuracy"], m["by_confidence"], m["rounds"]) == (1, 3, 1)


def test_accuracy_criterion_is_strict_against_error_rate():
    records = [
        rec(1, adv=True, conf=0.99, acc=1.0, test_acc=0.75),
        rec(2, conf=0.9, acc=0.25, test_acc=0.75),  # equal to the error rate: not below
        rec(3, conf=0.9, acc=0.2, test_acc=0.75),
    ]
    (m,) = mitigation_rounds(records)
    assert m["by_accuracy"] == 2 and m["rounds"] == 2 and m["by_confidence"] is None


def test_two_adversarial_rounds_windows():
    records = [
        rec(1),
        rec(2, adv=True, conf=0.9),
        rec(3, conf=0.8),
        rec(4, conf=0.8),
        rec(5, adv=True, conf=0.2, acc=0.0),  # would mitigate round 2 - but is round 5's
        rec(6, conf=0.9),
        rec(7, conf=0.1),
    ]
    first, second = mitigation_rounds(records)
    assert first == {
        "round": 2,
        "by_confidence": None,
        "by_accuracy": None,
        "rounds": None,
        "sustained": None,
        "observed": 2,
    }
    assert second["round"] == 5 and second["rounds"] == 0 and second["observed"] == 2


def test_sustained_counts_from_the_last_return_of_the_attack():
    # confidence per round after the attack at round 1 (r = 0 is round 1)
    confs = [0.9, 0.3, 0.8, 0.4, 0.2, 0.6, 0.1, 0.1]
    records = [rec(1 + r, adv=r == 0, conf=c) for r, c in enumerate(confs)]
    (m,) = mitigation_rounds(records)
    # first crossing at r = 1; the attack is back at r = 2 and r = 5; below 0.5 for good from r = 6
    assert (m["rounds"], m["sustained"]) == (1, 6)
    # the accuracy criterion counts too: r = 5 meets it, so the last return is r = 2
    records[5]["target_acc"] = 0.1  # < 1 - 0.8
    (m,) = mitigation_rounds(records)
    assert (m["rounds"], m["sustained"]) == (1, 3)
    # back above both at the window's end: not mitigated for good within the window
    records[-1].update(target_conf=0.7, target_acc=1.0)
    (m,) = mitigation_rounds(records)
    assert (m["rounds"], m["sustained"]) == (1, None)


def test_consecutive_adversarial_rounds():
    records = [rec(1, adv=True), rec(2, adv=True, conf=0.1), rec(3, conf=0.1)]
    first, second = mitigation_rounds(records)
    assert first["observed"] == 0 and first["rounds"] is None
    assert second["observed"] == 1 and second["rounds"] == 0


def test_no_adversarial_round():
    assert mitigation_rounds([rec(1), rec(2)]) == []
    assert mitigation_rounds([]) == []


def test_test_acc_every_k_rounds_uses_latest_known_in_window():
    records = [
        rec(1, adv=True, conf=0.9, acc=1.0, test_acc=0.9),
        rec(2, conf=0.9, acc=0.15, test_acc=None),  # latest acc 0.9: 0.15 !< 0.1
        rec(3, conf=0.9, acc=0.15, test_acc=0.8),  # 0.15 < 0.2
        rec(4, conf=0.9, acc=0.05, test_acc=None),
    ]
    (m,) = mitigation_rounds(records)
    assert m["by_accuracy"] == 2 and m["rounds"] == 2

    records[1] = rec(2, conf=0.9, acc=0.05, test_acc=None)  # 0.05 < 1 - 0.9
    (m,) = mitigation_rounds(records)
    assert m["by_accuracy"] == 1


def test_test_acc_every_k_rounds_uses_accuracy_from_before_the_attack():
    """Evaluation every 2 rounds, attack in an odd round: the benign error rate at rounds 3 and
    4 is known only from round 2 (the latest benign accuracy), and round 4 is below it."""
    records = [
        rec(1, test_acc=None),
        rec(2, conf=0.1, acc=0.0, test_acc=0.9),
        rec(3, adv=True, conf=0.9, acc=1.0, test_acc=None),
        rec(4, conf=0.9, acc=0.05, test_acc=None),  # 0.05 < 1 - 0.9
        rec(5, conf=0.9, acc=0.05, test_acc=None),
    ]
    (m,) = mitigation_rounds(records)
    assert m["by_accuracy"] == 1, m
    assert m["rounds"] == 1


def test_mitigation_treats_null_confidence_as_not_finite() -> None:
    """A diverged model's confidence is null in strict-JSON files and NaN in older ones; both
    are never below the threshold, while the accuracy criterion still applies."""
    from flwbc.metrics import mitigation_rounds

    def recs(conf):
        return [
            {"round": 1, "adversarial": True, "test_acc": 0.9, "target_conf": 1.0, "target_acc": 1},
            {
                "round": 2,
                "adversarial": False,
                "test_acc": 0.9,
                "target_conf": conf,
                "target_acc": 1,
            },
            {
                "round": 3,
                "adversarial": False,
                "test_acc": 0.9,
                "target_conf": conf,
                "target_acc": 0,
            },
        ]

    by_null, by_nan = mitigation_rounds(recs(None)), mitigation_rounds(recs(float("nan")))
    assert by_null == by_nan
    assert by_null[0]["by_confidence"] is None and by_null[0]["by_accuracy"] == 2
    assert by_null[0]["rounds"] == 2

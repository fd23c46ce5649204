"""The paper's metrics (§7.1): benign accuracy, misclassification confidence and accuracy on D_M,
and attack mitigation rounds (per adversarial round, and generalised to any recorded metric and
threshold per attack window: `rounds_until`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from flwbc.errors import FlwbcError
from flwbc.models import FlatModel
from flwbc.rng import numpy_rng

if TYPE_CHECKING:
    from flwbc.config import ExperimentConfig


@torch.inference_mode()
def evaluate(
    model: FlatModel,
    w: Tensor,
    x: Tensor,
    y: Tensor,
    normalize: Callable[[Tensor], Tensor],
    batch_size: int = 500,
) -> tuple[float, float]:
    """Accuracy and mean NLL loss of the model at `w` on uint8 images `x` with labels `y`."""
    correct = torch.zeros((), dtype=torch.int64, device=w.device)
    loss = torch.zeros((), dtype=torch.float64, device=w.device)
    for start in range(0, len(y), batch_size):
        xb = normalize(x[start : start + batch_size].to(w.device)).to(w.dtype)
        yb = y[start : start + batch_size].to(w.device)
        out = model(w, xb)
        loss += F.nll_loss(out, yb, reduction="sum").double()
        correct += (out.argmax(1) == yb).sum()
    n = len(y)
    return float(correct) / n, float(loss) / n


@torch.inference_mode()
def target_metrics(
    model: FlatModel, w: Tensor, x_mal: Tensor, targets: Tensor
) -> tuple[float, float]:
    """Misclassification confidence (mean softmax probability of each image's target label over
    D_M) and misclassification accuracy (fraction of D_M classified as its target)."""
    log_probs = model(w, x_mal)
    conf = log_probs.gather(1, targets.view(-1, 1)).double().exp().mean()
    hits = int((log_probs.argmax(1) == targets).sum())
    return float(conf), hits / len(targets)


def mitigation_rounds(
    records: Sequence[dict[str, Any]], threshold: float = 0.5
) -> list[dict[str, Any]]:
    """Attack mitigation rounds (paper §7.1) for every adversarial round of a run.

    For adversarial round t_a, the rounds r ≥ 0 are examined until the next adversarial round or
    the end of the run; the first r at which round t_a + r ends with misclassification confidence
    below `threshold` gives `by_confidence`, the first with misclassification accuracy below the
    benign error rate (1 − the latest benign accuracy) gives `by_accuracy`, and the paper's
    metric, `rounds`, is the earlier of the two. r = 0 means the attack never took hold. A
    criterion not met in the window is None, with `observed` saying how many rounds after t_a were
    seen (the true value is then more than that).

    The paper's metric counts the first round that meets either criterion, even if the attack
    comes back later without a new attack. `sustained` is the first r from which every round to
    the end of the window meets one (None if the window's last round does not), so
    `sustained != rounds` marks an attack that was mitigated and then returned. A NaN
    confidence (a diverged model; null in files written since records are strict JSON) is never
    below the threshold; the accuracy criterion still applies to it.
    """
    out = []
    adv_pos = [i for i, r in enumerate(records) if r["adversarial"]]
    for j, start in enumerate(adv_pos):
        end = adv_pos[j + 1] if j + 1 < len(adv_pos) else len(records)
        by_conf = by_acc = None
        known = [r["test_acc"] for r in records[:start] if r.get("test_acc") is not None]
        last_acc = known[-1] if known else None
        sustained: int | None = None
        for i in range(start, end):
            rec = records[i]
            if rec.get("test_acc") is not None:
                last_acc = rec["test_acc"]
            r = i - start
            conf, mis_acc = rec["target_conf"], rec["target_acc"]
            low_conf = conf is not None and conf < threshold
            low_acc = last_acc is not None and mis_acc is not None and mis_acc < 1.0 - last_acc
            if by_conf is None and low_conf:
                by_conf = r
            if by_acc is None and low_acc:
                by_acc = r
            if not (low_conf or low_acc):
                sustained = None
            elif sustained is None:
                sustained = r
        met = [v for v in (by_conf, by_acc) if v is not None]
        out.append(
            {
                "round": records[start]["round"],
                "by_confidence": by_conf,
                "by_accuracy": by_acc,
                "rounds": min(met) if met else None,
                "sustained": sustained,
                "observed": end - start - 1,
            }
        )
    return out


def attack_windows(records: Sequence[dict[str, Any]]) -> list[tuple[int, int]]:
    """The attack windows of a run: (first, last) positions in `records` of each maximal run of
    consecutive adversarial rounds (a continuous schedule gives one window)."""
    out: list[tuple[int, int]] = []
    for i, rec in enumerate(records):
        if not rec["adversarial"]:
            continue
        if out and out[-1][1] == i - 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def rounds_until(
    records: Sequence[dict[str, Any]],
    field: str,
    threshold: float,
    *,
    below: bool = True,
    skip_missing: bool = False,
) -> list[dict[str, Any]]:
    """Attack mitigation generalised to any recorded metric and threshold, per attack window.

    The paper's attack mitigation rounds (§7.1) count the rounds after an attack until the
    misclassification confidence is below 50%; `mitigation_rounds` does that per adversarial
    round. Here the metric is any record `field` (e.g. `backdoor_acc` < 0.5 or < 0.1,
    `target_conf` < 0.5) and the attack is a window, a maximal run of consecutive adversarial
    rounds (`attack_windows`), so a continuous or bursty attack is measured from the end of its
    window rather than from every one of its rounds.

    For a window whose last adversarial round is at position e, rounds r ≥ 0 are examined
    until the next window or the end of the run; round e + r meets the criterion when its value
    is below `threshold` (`below=True`, strictly) or above it (`below=False`, strictly).
    `rounds` is the first such r (0: already met right after the window's last attack); None
    when no round meets it, `observed` then says how many rounds after e were seen (the true
    value is more than that). `sustained`, as in `mitigation_rounds`, is the first r from which
    every round to the end of the examined span meets it (None if the span's last round does
    not), so `sustained != rounds` marks an effect that was mitigated and came back.

    A null value (NaN written as null, or a metric not measured that round) never meets the
    criterion and so breaks `sustained`; with `skip_missing` such rounds are passed over
    instead (they neither meet nor break it, but still count in r). NaN is treated as null.
    A `field` that no record has is an error (a typo would otherwise read as never mitigated).
    """
    windows = attack_windows(records)
    if windows and not any(field in rec for rec in records):
        raise FlwbcError(f"no round record has the field '{field}'")
    out = []
    for j, (first, last) in enumerate(windows):
        end = windows[j + 1][0] if j + 1 < len(windows) else len(records)
        met_at: int | None = None
        sustained: int | None = None
        for i in range(last, end):
            r = i - last
            value = records[i].get(field)
            missing = value is None or value != value  # None or NaN
            if missing and skip_missing:
                continue
            met = not missing and (value < threshold if below else value > threshold)
            if met and met_at is None:
                met_at = r
            if not met:
                sustained = None
            elif sustained is None:
                sustained = r
        out.append(
            {
                "round": records[first]["round"],
                "last_round": records[last]["round"],
                "attack_rounds": last - first + 1,
                "rounds": met_at,
                "sustained": sustained,
                "observed": end - last - 1,
            }
        )
    return out


def attack_kind(attack: dict[str, Any], records: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """What a run's attack is measured by, from its config's `attack` section and its records:
    ("clean", "test_acc") without an attack (or the honest one), ("backdoor", "backdoor_acc")
    when the records hold a backdoor's success, ("targeted", "target_conf") for the paper's
    eq. 3 attack, else ("untargeted", "accuracy drop"), the drop against a paired clean run."""
    if attack.get("enabled", True) is False or attack.get("name") == "honest":
        return "clean", "test_acc"
    if any(r.get("backdoor_acc") is not None for r in records):
        return "backdoor", "backdoor_acc"
    if attack.get("name", "targeted") == "targeted":
        return "targeted", "target_conf"
    return "untargeted", "accuracy drop"


def evaluated_test_indices(cfg: ExperimentConfig, n: int, t: int | None = None) -> Tensor | None:
    """The indices of the `eval.test_size` test images evaluated among n at round t, drawn once
    per seed from the stream (seed, "test-subset") and sorted; None for the whole test set,
    which the last round gets unless `eval.final_on_subset`."""
    size = cfg.eval.test_size
    if size is None or size >= n:
        return None
    if t == cfg.federation.rounds and not cfg.eval.final_on_subset:
        return None
    idx = numpy_rng(cfg.seed, "test-subset").choice(n, size, replace=False)
    return torch.from_numpy(idx).sort().values

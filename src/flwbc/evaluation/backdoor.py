"""Backdoor success rate (`backdoor_acc`), every round, in every run of a backdoor attack
(`flwbc.attacks.backdoor`): among the test images whose true label is not the attack's
target, the share the global model classifies as the target once the attack's full (global)
trigger is written into them. Clean accuracy is the `accuracy` metric's `test_acc`. Null in a
run whose attack has no trigger."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from flwbc.evaluation.base import Metric, register_metric
from flwbc.metrics import evaluate, evaluated_test_indices

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


def backdoor_success(
    exp: ExperimentContext,
    w: Tensor,
    triggered: Tensor,
    target: int,
    batch_size: int,
    t: int | None = None,
) -> float:
    """Share of the non-target test images, triggered (`triggered`, raw uint8, one per test
    image; the `eval.test_size` evaluated at round t when set), that the model at w classifies
    as `target`."""
    labels = exp.dataset.test_y
    idx = evaluated_test_indices(exp.cfg, len(labels), t)
    if idx is not None:
        labels, triggered = labels[idx], triggered[idx]
    keep = labels != target
    x = triggered[keep]
    y = torch.full((len(x),), target, dtype=torch.int64)
    acc, _ = evaluate(exp.model, w, x, y, exp.dataset.normalize, batch_size)
    return acc


@register_metric("backdoor")
class Backdoor(Metric[None]):
    """Backdoor success rate of the attack's global trigger on the test set (backdoor_acc)."""

    fields = ("backdoor_acc",)

    def measure(self, exp: ExperimentContext, w: Tensor, t: int) -> dict[str, Any]:
        attack = exp.attack
        if attack is None or not hasattr(attack, "test_trigger"):
            return {}
        triggered = attack.test_trigger(exp)
        acc = backdoor_success(exp, w, triggered, attack.target, exp.cfg.eval.batch_size, t)
        return {"backdoor_acc": acc}

"""Misclassification confidence and accuracy on the malicious set D_M (paper §7.1), every
round, when the attack has a D_M."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor

from flwbc.evaluation.base import Metric, register_metric
from flwbc.metrics import target_metrics

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


@register_metric("target")
class Target(Metric[None]):
    """D_M's mean target-label probability and share classified as the target (target_conf,
    target_acc)."""

    fields = ("target_conf", "target_acc")

    def measure(self, exp: ExperimentContext, w: Tensor, t: int) -> dict[str, Any]:
        if exp.x_mal is None or exp.y_mal is None:
            return {}
        conf, acc = target_metrics(exp.model, w, exp.x_mal, exp.y_mal)
        return {"target_conf": conf, "target_acc": acc}

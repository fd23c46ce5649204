"""Benign test accuracy and loss of the global model (paper §7.1's benign accuracy), on the
whole test set (or `eval.test_size` images of it), every `eval.every` rounds and at the last
round (on the whole test set unless `eval.final_on_subset`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor

from flwbc.evaluation.base import Metric, register_metric
from flwbc.metrics import evaluate

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


@register_metric("accuracy")
class Accuracy(Metric[None]):
    """Test-set accuracy and mean loss (test_acc, test_loss)."""

    fields = ("test_acc", "test_loss")

    def measure(self, exp: ExperimentContext, w: Tensor, t: int) -> dict[str, Any]:
        cfg = exp.cfg
        if t % cfg.eval.every != 0 and t != cfg.federation.rounds:
            return {}
        x, y = exp.test_data(t)
        acc, loss = evaluate(exp.model, w, x, y, exp.dataset.normalize, cfg.eval.batch_size)
        return {"test_acc": acc, "test_loss": loss}

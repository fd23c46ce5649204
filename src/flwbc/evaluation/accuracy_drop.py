"""Accuracy drop against a paired clean run (`acc_drop`): the clean run's test accuracy in the
same round minus this run's, every round both were measured.

An untargeted attack's effect is what it costs the model, which only a clean run that shares
everything else can tell: the same config and seed with `attack.name: honest` (the attackers
take part in the same rounds but send honest updates), so both runs have the same clients,
participants and data order. Name the clean run's directory in `clean_run`; its
`rounds.jsonl` is read once. Positive: the attack cost accuracy. `flwbc matrix` pairs its cells
the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field
from torch import Tensor

from flwbc.errors import FlwbcError
from flwbc.evaluation.base import Metric, register_metric
from flwbc.plugin_options import PluginOptions
from flwbc.runio import read_jsonl

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


def accuracy_drop(clean: dict[str, Any] | None, record: dict[str, Any]) -> float | None:
    """The clean record's `test_acc` minus `record`'s (None unless both were measured)."""
    a = None if clean is None else clean.get("test_acc")
    b = record.get("test_acc")
    return None if a is None or b is None else a - b


class AccuracyDropOptions(PluginOptions):
    clean_run: str = Field(description="the paired clean run's directory")


@register_metric("accuracy_drop")
class AccuracyDrop(Metric[AccuracyDropOptions]):
    """The paired clean run's test accuracy minus this run's, per round (acc_drop)."""

    fields = ("acc_drop",)
    Options = AccuracyDropOptions

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self._clean: dict[int, dict[str, Any]] | None = None

    def _records(self) -> dict[int, dict[str, Any]]:
        if self._clean is None:
            path = Path(self.options.clean_run) / "rounds.jsonl"
            if not path.is_file():
                raise FlwbcError(f"metric 'accuracy_drop': no clean run records at {path}")
            self._clean = {r["round"]: r for r in read_jsonl(path)}
        return self._clean

    def check(self, exp: ExperimentContext) -> None:
        self._records()

    def measure(self, exp: ExperimentContext, w: Tensor, t: int) -> dict[str, Any]:
        return {}

    def derive(self, record: dict[str, Any], t: int) -> dict[str, Any]:
        return {"acc_drop": accuracy_drop(self._records().get(t), record)}

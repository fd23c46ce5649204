"""Backdoor success rate (`backdoor_acc`), every round, in every run of a backdoor attack
(`flwbc.attacks.backdoor`): among the test images whose true label is not the attack's
target, the share the global model classifies as the target once the attack's full (global)
trigger is written into them. Clean accuracy is the `accuracy` metric's `test_acc`. Null in a
run whose attack has no trigger.

Option `include_target` (default false, the above) scores every test image instead, those of
the target class included, as LeadFL's official code measures its backdoor accuracy (Zhu et
al., ICML 2023; chaoyitud/LeadFL at 06ecc98, `fltk/core/federator.py:343-382`: the whole test
loader triggered by `make_backdoor_batch(test=True)`, every label set to the target, accuracy
= the share predicted as the target). On a ten-class test set with ~1,000 target-class images
that number is about 0.9 × the default's + 0.1 × the triggered target-class images' share
predicted as the target (close to 1), so its floor is about 10%. Select it with
`eval.metrics: [{name: backdoor, options: {include_target: true}}]`; the attack then does not
add a second, default `backdoor` metric.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field
from torch import Tensor

from flwbc.attacks.backdoor import BackdoorAttack
from flwbc.evaluation.base import Metric, register_metric
from flwbc.metrics import evaluate, evaluated_test_indices
from flwbc.plugin_options import PluginOptions

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


def backdoor_success(
    exp: ExperimentContext,
    w: Tensor,
    triggered: Tensor,
    target: int,
    batch_size: int,
    t: int | None = None,
    include_target: bool = False,
) -> float:
    """Share of the non-target test images (every test image with `include_target`),
    triggered (`triggered`, raw: uint8, or float with a trigger's `levels`; one per test
    image; the `eval.test_size` evaluated at round t when set), that the model at w classifies
    as `target`."""
    labels = exp.dataset.test_y
    idx = evaluated_test_indices(exp.cfg, len(labels), t)
    if idx is not None:
        labels, triggered = labels[idx], triggered[idx]
    x = triggered if include_target else triggered[labels != target]
    y = torch.full((len(x),), target, dtype=torch.int64)
    acc, _ = evaluate(exp.model, w, x, y, exp.dataset.normalize, batch_size)
    return acc


class BackdoorMetricOptions(PluginOptions):
    include_target: bool = Field(
        False,
        description="also score the test images of the target class (LeadFL's official code: "
        "every test image triggered, floor about 1/classes); false: non-target images only",
    )


@register_metric("backdoor")
class Backdoor(Metric[BackdoorMetricOptions]):
    """Backdoor success rate of the attack's global trigger on the test set (backdoor_acc)."""

    fields = ("backdoor_acc",)
    Options = BackdoorMetricOptions

    def measure(self, exp: ExperimentContext, w: Tensor, t: int) -> dict[str, Any]:
        attack = exp.attack
        if not isinstance(attack, BackdoorAttack):
            return {}
        triggered = attack.test_trigger(exp)
        acc = backdoor_success(
            exp,
            w,
            triggered,
            attack.target,
            exp.cfg.eval.batch_size,
            t,
            include_target=self.options.include_target,
        )
        return {"backdoor_acc": acc}

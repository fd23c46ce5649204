"""Label flipping, a data-poisoning attack (Tolpegin et al., "Data poisoning attacks against
federated learning systems", ESORICS 2020; Fung, Yoon & Beschastnikh, RAID 2020): attackers
train honestly on their own images with relabelled targets and send the resulting update.

Modes: `all_to_one`, every label becomes `target`; `one_to_one`, label `source` becomes
`target`, the others stay; `shift`, label y becomes (y + `shift`) mod C (the "random shift"
of the benchmarks, with a fixed shift; C the dataset's class count). Assumes only the
attacker's own data.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field, model_validator

from flwbc.attacks.base import Attack, register_attack
from flwbc.client.local import Epoch, benign_plan
from flwbc.errors import FlwbcError
from flwbc.plugin_options import PluginOptions

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


class LabelFlipOptions(PluginOptions):
    mode: Literal["all_to_one", "one_to_one", "shift"] = Field(
        "all_to_one", description="which labels are flipped, and to what"
    )
    source: int = Field(0, ge=0, description="one_to_one: the label that is flipped")
    target: int = Field(1, ge=0, description="all_to_one, one_to_one: the new label")
    shift: int = Field(1, ge=1, description="shift: y becomes (y + shift) mod classes")

    @model_validator(mode="after")
    def _distinct(self) -> LabelFlipOptions:
        if self.mode == "one_to_one" and self.source == self.target:
            raise ValueError("source and target must differ")
        return self


def flip_labels(y: torch.Tensor, options: LabelFlipOptions, num_classes: int) -> torch.Tensor:
    """The poisoned labels of `y` under `options`."""
    if options.mode == "all_to_one":
        return torch.full_like(y, options.target)
    if options.mode == "one_to_one":
        return torch.where(y == options.source, torch.full_like(y, options.target), y)
    return (y + options.shift) % num_classes


@register_attack("label_flip")
class LabelFlip(Attack[LabelFlipOptions]):
    """Train on the attacker's own images with flipped labels."""

    Options = LabelFlipOptions

    def plan(
        self, exp: ExperimentContext, t: int, c: int, generator: torch.Generator
    ) -> tuple[int, Iterator[Epoch]]:
        num_classes = exp.dataset.num_classes
        top = max(self.options.source, self.options.target)
        if self.options.mode != "shift" and top >= num_classes:
            raise FlwbcError(
                f"attack 'label_flip': label {top} outside 0..{num_classes - 1} of "
                f"{exp.cfg.data.name}"
            )
        x, y = exp.client_data(c)
        loc = self.cfg.local
        flipped = flip_labels(y, self.options, num_classes)
        return len(y), benign_plan(x, flipped, loc.batch_size, loc.epochs, generator)

    def group_key(self, exp: ExperimentContext, n: int) -> Hashable:
        return (n, self.cfg.local.batch_size, self.cfg.local.epochs)

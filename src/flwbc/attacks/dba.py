"""DBA, the distributed backdoor attack (Xie, Huang, Chen & Li, "DBA: Distributed backdoor
attacks against federated learning", ICLR 2020): the global trigger is split into `parts`
disjoint local triggers; each attacker poisons its own data with its local trigger only,
and the backdoor is tested with the whole (global) trigger.

Attacker i (its position in `malicious_ids`, which is its position among a round's attackers,
since a round's attackers are the first N of that list) uses local trigger i mod `parts`.

Assumed knowledge: the attacker's own data, the global model it is sent, and its share of the
trigger (the attackers agree on the split beforehand).

Options: those of every backdoor (`flwbc.attacks.backdoor.BackdoorOptions`), with the paper's
trigger as default: `pattern: bars`, `parts` bars of 1×`size` = 1×4 pixels, two per row, `gap`
2 pixels across and rows down, at the top-left corner (`margin` 0) — DBA's code, MNIST/CIFAR
`i_poison_pattern`, e.g. [[0,0]..[0,3]], [[0,6]..[0,9]], [[3,0]..[3,3]], [[3,6]..[3,9]]; target
2 (`poison_label_swap`), 20 of 64 images per batch poisoned. Other patterns are split into
`parts` bands of rows. `parts`: number of local triggers (paper: 4). `scale`: the attacker's
update is multiplied by it before sending (the paper's single-shot experiments use
`scale_weights_poison` 100; its multi-shot ones, as the default 1 here, do not scale).

Deviations: poisoned images are a fixed share of the attacker's data each round rather than
20 of every batch of 64; the attacker trains with the experiment's local lr, momentum, batch
size and epochs (DBA's code uses its own poison lr and 10 internal poison epochs; set
`epochs` for the latter).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field
from torch import Tensor

from flwbc.attacks.backdoor import BackdoorAttack, BackdoorOptions, Corner, Pattern, Stamp, Trigger
from flwbc.attacks.base import register_attack

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


class DBAOptions(BackdoorOptions):
    pattern: Pattern = Field(
        "bars",
        description="global trigger: bars (the paper's), square, checkerboard, pixel or nine_pixel",
    )
    location: Corner = Field("top_left", description="the corner the trigger sits in")
    margin: int = Field(0, ge=0, description="pixels between the trigger and the corner's edges")
    parts: int = Field(4, ge=1, description="local triggers the global one is split into")
    scale: float = Field(
        1.0, gt=0, description="factor on the attacker's update (paper's single-shot: 100)"
    )


@register_attack("dba")
class DBA(BackdoorAttack[DBAOptions]):
    """Each attacker poisons with its part of the global trigger; the test uses the whole."""

    trigger_fields = BackdoorAttack.trigger_fields | {"parts"}

    Options = DBAOptions

    def trigger(self) -> Trigger:
        return self.options.trigger(bars=self.options.parts)

    def part(self, exp: ExperimentContext, c: int) -> int:
        """Which local trigger attacker c uses."""
        return exp.malicious_ids.index(c) % self.options.parts

    def local_stamp(self, exp: ExperimentContext, t: int, c: int) -> Stamp:
        _, h, w = exp.dataset.image_shape
        return self.trigger().parts(h, w, self.options.parts)[self.part(exp, c)]

    def final(self, state: object, update: Tensor) -> Tensor:
        return update if self.options.scale == 1.0 else update * self.options.scale

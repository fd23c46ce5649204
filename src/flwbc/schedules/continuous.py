"""A continuous attack: every round from `start` to `end` (inclusive) is adversarial, with the
same number of attackers each round.

The paper's schedules attack in isolated rounds (§7.1: each round with probability 0.1; Fig.
3-6: one forced round) and measure how long the effect persists afterwards. A continuous
attack is the other extreme, with a fixed number of attackers in every round of a window (as
LeadFL's code does with `selection_method: consistent`, chaoyitud/LeadFL
`fltk/core/federator.py`: `mal_clients_per_round` attackers in every round): it shows whether
a defense holds the effect down while the attack goes on and, with
`flwbc.metrics.rounds_until`, how long the effect lasts after the attack window ends.
Deterministic: no randomness at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from flwbc.errors import FlwbcError
from flwbc.plugin_options import PluginOptions
from flwbc.schedules.base import Schedule, register_schedule

if TYPE_CHECKING:
    from flwbc.config import ExperimentConfig


class ContinuousOptions(PluginOptions):
    start: int = Field(1, ge=1, description="first adversarial round (1-based)")
    end: int | None = Field(
        None, ge=1, description="last adversarial round, inclusive; default: the run's last"
    )
    attackers: int | None = Field(
        None,
        ge=1,
        description="attackers in each adversarial round, at most attack.num_malicious; "
        "default: all attack.num_malicious",
    )


@register_schedule("continuous")
class Continuous(Schedule[ContinuousOptions]):
    """Every round from start to end is adversarial, with the same number of attackers."""

    Options = ContinuousOptions

    def __init__(self, cfg: ExperimentConfig, options: ContinuousOptions | None = None) -> None:
        super().__init__(cfg, options)
        opts = self.options
        total, n_mal = cfg.federation.rounds, cfg.attack.num_malicious
        self.start = opts.start
        self.end = opts.end if opts.end is not None else total
        self.count = opts.attackers if opts.attackers is not None else n_mal
        if not self.start <= self.end <= total:
            raise FlwbcError(
                f"attack schedule 'continuous': start ({self.start}) and end ({self.end}) must "
                f"satisfy 1 <= start <= end <= federation.rounds ({total})"
            )
        if self.count > n_mal:
            raise FlwbcError(
                f"attack schedule 'continuous': attackers ({self.count}) must be at most "
                f"attack.num_malicious ({n_mal})"
            )

    def attackers(self, t: int) -> int:
        return self.count if self.start <= t <= self.end else 0

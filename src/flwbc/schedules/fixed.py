"""Attacks in fixed rounds: every round listed in `attack.rounds` (or the `rounds` option) is
adversarial, with all `attack.num_malicious` attackers (the paper's Fig. 3-6 setting: one
forced adversarial round)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from flwbc.errors import FlwbcError
from flwbc.plugin_options import PluginOptions
from flwbc.schedules.base import Schedule, register_schedule

if TYPE_CHECKING:
    from flwbc.config import ExperimentConfig


class FixedOptions(PluginOptions):
    rounds: list[int] | None = Field(
        None, description="adversarial rounds (1-based); default: attack.rounds"
    )


@register_schedule("fixed")
class Fixed(Schedule[FixedOptions]):
    """Every listed round is adversarial, with all attackers."""

    Options = FixedOptions

    def __init__(self, cfg: ExperimentConfig, options: FixedOptions | None = None) -> None:
        super().__init__(cfg, options)
        listed = self.options.rounds
        bad = [r for r in listed or [] if not 1 <= r <= cfg.federation.rounds]
        if bad:
            raise FlwbcError(
                f"attack schedule 'fixed': rounds {bad} outside 1..federation.rounds "
                f"({cfg.federation.rounds})"
            )

    def attackers(self, t: int) -> int:
        listed = self.options.rounds
        rounds = listed if listed is not None else self.cfg.attack.rounds or []
        return self.cfg.attack.num_malicious if t in rounds else 0

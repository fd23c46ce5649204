"""Attacks in fixed rounds: every round listed in `attack.rounds` (or the `rounds` option) is
adversarial, with all `attack.num_malicious` attackers (the paper's Fig. 3-6 setting: one
forced adversarial round)."""

from __future__ import annotations

from pydantic import Field

from flwbc.plugin_options import PluginOptions
from flwbc.schedules.base import Schedule, register_schedule


class FixedOptions(PluginOptions):
    rounds: list[int] | None = Field(
        None, description="adversarial rounds (1-based); default: attack.rounds"
    )


@register_schedule("fixed")
class Fixed(Schedule):
    """Every listed round is adversarial, with all attackers."""

    Options = FixedOptions

    def attackers(self, t: int) -> int:
        listed = self.options.rounds if isinstance(self.options, FixedOptions) else None
        rounds = listed if listed is not None else self.cfg.attack.rounds or []
        return self.cfg.attack.num_malicious if t in rounds else 0

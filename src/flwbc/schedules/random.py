"""Attacks at random rounds: from `attack.start_round` on, each round is adversarial with
probability `attack.prob`, independently (the paper's §7.1 schedule), with all
`attack.num_malicious` attackers. The draw for round t comes from the stream
(seed, "adversarial", t)."""

from __future__ import annotations

from flwbc.rng import numpy_rng
from flwbc.schedules.base import Schedule, register_schedule


@register_schedule("random")
class Random(Schedule[None]):
    """Each round from attack.start_round is adversarial with probability attack.prob."""

    def attackers(self, t: int) -> int:
        att = self.cfg.attack
        hit = (
            t >= att.start_round and numpy_rng(self.cfg.seed, "adversarial", t).random() < att.prob
        )
        return att.num_malicious if hit else 0

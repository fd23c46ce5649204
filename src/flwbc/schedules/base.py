"""The attack-schedule extension point: *when* the attack happens and *how many* attackers take
part in each round.

A config selects a schedule with `attack.schedule: {name, options}`; without one, the attack
section's own fields choose a built-in one as they always did (`attack.rounds` given: `fixed`,
else `random` with `attack.prob` from `attack.start_round`). Each schedule is one module that
subclasses `Schedule` and registers with `@register_schedule("name")`. A schedule draws
randomness only from keyed streams of (seed, round), so round t's answer never depends on
earlier rounds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flwbc.registry import ConfiguredPlugin, O, Registry

if TYPE_CHECKING:
    from flwbc.config import ExperimentConfig

SCHEDULES: Registry[type[Schedule]] = Registry("attack schedule")


class Schedule(ConfiguredPlugin[O], ABC):
    """Base class of attack schedules."""

    @abstractmethod
    def attackers(self, t: int) -> int:
        """How many attackers take part in round t (0: a benign round), at most
        `attack.num_malicious`."""


def register_schedule(name: str) -> Callable[[type[Schedule]], type[Schedule]]:
    """Register a `Schedule` subclass under `name`."""
    return SCHEDULES.register(name)


def build_schedule(cfg: ExperimentConfig) -> Schedule | None:
    """The config's attack schedule (None without an attack)."""
    att = cfg.attack
    if not att.enabled:
        return None
    ref: Any = att.schedule
    name = ref.name if ref is not None else ("fixed" if att.rounds is not None else "random")
    given = dict(ref.options) if ref is not None else {}
    return SCHEDULES.lookup(name)(cfg, SCHEDULES.options(name, given))

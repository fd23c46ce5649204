"""Attack schedules, each one module registering itself with `@register_schedule`; importing
this package imports every module in it."""

from flwbc.registry import import_submodules
from flwbc.schedules.base import SCHEDULES, Schedule, build_schedule, register_schedule

import_submodules(__name__, __path__)

__all__ = ["SCHEDULES", "Schedule", "build_schedule", "register_schedule"]

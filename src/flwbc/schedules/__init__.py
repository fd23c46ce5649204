"""Attack schedules, each one module registering itself with `@register_schedule`; importing
this package imports every module in it."""

import importlib
import pkgutil

from flwbc.schedules.base import SCHEDULES, Schedule, build_schedule, register_schedule

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["SCHEDULES", "Schedule", "build_schedule", "register_schedule"]

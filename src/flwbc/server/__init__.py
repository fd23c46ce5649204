"""Server-side aggregation rules.

Importing this package imports every module in it, so a rule is one file that registers itself
with `@register_aggregator("name")`.
"""

import importlib
import pkgutil

from flwbc.server.base import (
    AGGREGATORS,
    Aggregate,
    Aggregator,
    RoundContext,
    build_aggregator,
    register_aggregator,
)

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = [
    "AGGREGATORS",
    "Aggregate",
    "Aggregator",
    "RoundContext",
    "build_aggregator",
    "register_aggregator",
]

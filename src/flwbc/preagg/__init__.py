"""Pre-aggregation steps, each one module registering itself with `@register_pre_aggregator`;
importing this package imports every module in it."""

import importlib
import pkgutil

from flwbc.preagg.base import (
    PRE_AGGREGATORS,
    PreAggregator,
    build_pre_aggregators,
    register_pre_aggregator,
)

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["PRE_AGGREGATORS", "PreAggregator", "build_pre_aggregators", "register_pre_aggregator"]

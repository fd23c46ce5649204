"""Per-round metrics, each one module registering itself with `@register_metric`; importing
this package imports every module in it."""

import importlib
import pkgutil

from flwbc.evaluation.base import (
    BUILT_IN,
    METRICS,
    Metric,
    build_metrics,
    measure_round,
    register_metric,
)

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["BUILT_IN", "METRICS", "Metric", "build_metrics", "measure_round", "register_metric"]

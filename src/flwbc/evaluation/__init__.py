"""Per-round metrics, each one module registering itself with `@register_metric`; importing
this package imports every module in it."""

from flwbc.evaluation.base import (
    BUILT_IN,
    METRICS,
    Metric,
    build_metrics,
    measure_round,
    register_metric,
)
from flwbc.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = ["BUILT_IN", "METRICS", "Metric", "build_metrics", "measure_round", "register_metric"]

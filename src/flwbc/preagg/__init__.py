"""Pre-aggregation steps, each one module registering itself with `@register_pre_aggregator`;
importing this package imports every module in it."""

from flwbc.preagg.base import (
    PRE_AGGREGATORS,
    PreAggregator,
    build_pre_aggregators,
    register_pre_aggregator,
)
from flwbc.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = ["PRE_AGGREGATORS", "PreAggregator", "build_pre_aggregators", "register_pre_aggregator"]

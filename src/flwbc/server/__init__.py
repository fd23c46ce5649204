"""Server-side aggregation rules.

Importing this package imports every module in it, so a rule is one file that registers itself
with `@register_aggregator("name")`.
"""

from flwbc.registry import import_submodules
from flwbc.server.base import (
    AGGREGATORS,
    Aggregate,
    Aggregator,
    RoundContext,
    build_aggregator,
    register_aggregator,
)

import_submodules(__name__, __path__)

__all__ = [
    "AGGREGATORS",
    "Aggregate",
    "Aggregator",
    "RoundContext",
    "build_aggregator",
    "register_aggregator",
]

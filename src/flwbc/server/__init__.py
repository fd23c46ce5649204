"""Server-side aggregation rules; importing this package registers the built-in rules."""

from flwbc.server import fedavg  # noqa: F401  (registers the rule)
from flwbc.server.base import (
    AGGREGATORS,
    Aggregate,
    Aggregator,
    RoundContext,
    build_aggregator,
    register_aggregator,
)

__all__ = [
    "AGGREGATORS",
    "Aggregate",
    "Aggregator",
    "RoundContext",
    "build_aggregator",
    "register_aggregator",
]

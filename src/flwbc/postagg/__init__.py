"""Post-aggregation steps, each one module registering itself with
`@register_post_aggregator`; importing this package imports every module in it."""

from flwbc.postagg.base import (
    POST_AGGREGATORS,
    PostAggregator,
    build_post_aggregators,
    register_post_aggregator,
)
from flwbc.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = [
    "POST_AGGREGATORS",
    "PostAggregator",
    "build_post_aggregators",
    "register_post_aggregator",
]

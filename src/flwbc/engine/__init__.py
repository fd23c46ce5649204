"""Engines: the backends that run a round's clients, registered by name (`registry.py`).

Built in: `sequential` (the reference: clients one after another), `batched` (clients of the
same schedule trained together, with the same result) and `flower` (Flower's simulation
engine, each client a ClientApp).
"""

from flwbc.engine import batched, flower, sequential  # noqa: F401  (importing registers them)
from flwbc.engine.registry import (
    ENGINES,
    Engine,
    RoundItem,
    get_engine,
    register_engine,
    replay_engine,
)

__all__ = ["ENGINES", "Engine", "RoundItem", "get_engine", "register_engine", "replay_engine"]

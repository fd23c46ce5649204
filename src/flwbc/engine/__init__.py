"""Engines: the backends that run a round's clients, registered by name (`registry.py`); every
module of this package is imported, so an engine is one file here.

Built in: `sequential` (the reference: clients one after another), `batched` (clients of the
same schedule trained together, with the same result) and `flower` (Flower's simulation
engine, each client a ClientApp: `flwbc.flower.engine`, loaded as a built-in plug-in).
"""

from flwbc.engine.registry import (
    ENGINES,
    Engine,
    RoundItem,
    get_engine,
    register_engine,
    replay_engine,
)
from flwbc.registry import import_submodules

import_submodules(__name__, __path__, skip=("registry",))

__all__ = ["ENGINES", "Engine", "RoundItem", "get_engine", "register_engine", "replay_engine"]

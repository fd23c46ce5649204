"""The in-process engines: `sequential` (the reference: clients one after another) and `batched`
(clients of the same schedule trained together, with the same result)."""

from __future__ import annotations

from types import ModuleType


def engine_of(engine: str) -> ModuleType:
    """The module whose `train_round` and `round_updates` run a config's `engine` in process (a
    Flower run equals the sequential engine's)."""
    from flwbc.engine import batched, sequential

    return batched if engine == "batched" else sequential

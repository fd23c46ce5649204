"""The in-process engines: `sequential` (the reference: clients one after another) and `batched`
(clients of the same schedule trained together, with the same result)."""

from __future__ import annotations

from types import ModuleType


def engine_of(engine: str) -> ModuleType:
    """The module whose `train_round` and `round_updates` run a config's `engine` in process.
    A Flower run computes what the sequential engine does, equal to it within float32 rounding
    (its ClientApps may run on other thread counts), so `flower` maps to `sequential`."""
    from flwbc.engine import batched, sequential

    modules = {"sequential": sequential, "batched": batched, "flower": sequential}
    if engine not in modules:
        raise ValueError(f"unknown engine '{engine}'")
    return modules[engine]

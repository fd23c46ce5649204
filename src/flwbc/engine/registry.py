"""The engine registry: every way of running a round's clients is an `Engine`, registered by
name, and `run`, `run_many`, `analyze`, `compare-rules` and the Flower apps all find engines
here (a config's `engine` names one).

An in-process engine trains rounds itself (`train_rounds`, lock-step across runs where it can,
and `round_updates`, the client updates before aggregation). An engine that runs elsewhere
(Flower's simulation) instead drives a whole run session (`drive`) and names the in-process
engine that recomputes its rounds for analyses (`replay`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor

from flwbc.errors import FlwbcError
from flwbc.registry import Registry

if TYPE_CHECKING:
    from flwbc.context import RoundPlan
    from flwbc.experiment import Experiment
    from flwbc.round import RoundOutput, RoundUpdates

RoundItem = tuple["Experiment", "RoundPlan", Tensor]
"""One run's round to train: its experiment, the round's plan and the global weights."""


@dataclass(frozen=True)
class Engine:
    name: str
    description: str
    train_rounds: Callable[[list[RoundItem]], list[RoundOutput]] | None = None
    """One round of each item (several runs at once), each result equal to training it alone."""
    round_updates: Callable[[Experiment, RoundPlan, Tensor], RoundUpdates] | None = None
    """A round's client updates before aggregation."""
    drive: Callable[[Any, Callable[[dict[str, Any]], bool]], None] | None = None
    """Run the session's remaining rounds elsewhere, calling back after each round (the
    session is the run's `flwbc.api.RunSession`, a layer above the engines)."""
    replay: str | None = None
    """The in-process engine that recomputes this engine's rounds (None: this one)."""
    no_past_models: str | None = None
    """Why this engine's clients never see the global models of past rounds, for plug-ins that
    need them (None: they see them; an attack's `observe` is called every round)."""

    @property
    def in_process(self) -> bool:
        return self.train_rounds is not None

    def train_round(self, exp: Experiment, plan: RoundPlan, w: Tensor) -> RoundOutput:
        if self.train_rounds is None:
            raise FlwbcError(f"engine '{self.name}' does not train rounds in this process")
        return self.train_rounds([(exp, plan, w)])[0]


ENGINES: Registry[Engine] = Registry("engine")


def register_engine(engine: Engine) -> Engine:
    """Add an engine under its name (a name taken by another engine is refused)."""
    if engine.train_rounds is None and engine.drive is None:
        raise ValueError(f"engine '{engine.name}' needs train_rounds or drive")
    ENGINES.add(engine.name, engine, origin=engine.train_rounds or engine.drive)
    return engine


def get_engine(name: str) -> Engine:
    """The engine registered as `name`; an unknown name lists the registered ones."""
    return ENGINES.lookup(name)


def replay_engine(name: str) -> Engine:
    """The in-process engine that recomputes the rounds of a run made by engine `name`."""
    engine = get_engine(name)
    return get_engine(engine.replay) if engine.replay is not None else engine

"""The reference engine: trains a round's clients one after another, each alone (G = 1)."""

from __future__ import annotations

from torch import Tensor

from flwbc.context import RoundPlan
from flwbc.engine.registry import Engine, RoundItem, register_engine
from flwbc.experiment import Experiment
from flwbc.round import RoundOutput, RoundUpdates, aggregate_round, client_update


def round_updates(exp: Experiment, plan: RoundPlan, w: Tensor) -> RoundUpdates:
    """Every participant of the round trains from `w`, one after another."""
    return RoundUpdates.of(
        [
            client_update(exp, plan.round, c, mal, w)
            for c, mal in zip(plan.clients, plan.malicious, strict=True)
        ]
    )


def train_round(exp: Experiment, plan: RoundPlan, w: Tensor) -> RoundOutput:
    """One FedAvg round: every participant trains, the aggregator combines their updates."""
    u = round_updates(exp, plan, w)
    return aggregate_round(exp, plan, w, u.updates, u.mean_loss, u.stats)


def train_rounds(items: list[RoundItem]) -> list[RoundOutput]:
    """One round of each run, one run after another."""
    return [train_round(exp, plan, w) for exp, plan, w in items]


ENGINE = register_engine(
    Engine(
        "sequential",
        "clients one after another: the reference",
        train_rounds=train_rounds,
        round_updates=round_updates,
    )
)

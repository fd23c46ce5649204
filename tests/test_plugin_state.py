"""Every kind of plug-in keeps its state in checkpoints: a client defense and a
post-aggregation step that carry a tensor across rounds make a run stopped after round 2 and
resumed byte-identical to one never stopped; restoring only the rule's state, as checkpoints
did before, gives another run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from flwbc.api import run
from flwbc.context import RoundContext
from flwbc.defenses import CLIENT_DEFENSES, ClientDefense
from flwbc.experiment import AGG_PREFIX, Experiment
from flwbc.postagg import POST_AGGREGATORS, PostAggregator
from flwbc.runio import load_extra


class DriftMemory(ClientDefense):
    """Adds to every benign update a decaying memory of the updates it saw (state)."""

    def __init__(self, cfg: Any, options: Any) -> None:
        super().__init__(cfg, options)
        self.memory: Tensor | None = None

    def final(self, state: Any, update: Tensor) -> Tensor:
        self.memory = update.clone() if self.memory is None else 0.5 * self.memory + 0.5 * update
        return update + 0.1 * self.memory

    def state_dict(self) -> dict[str, Tensor]:
        return {} if self.memory is None else {"memory": self.memory}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.memory = state.get("memory")


class ServerMomentum(PostAggregator[Any]):
    """Server momentum: the aggregate plus 0.9 times the last step (state)."""

    Options = None  # type: ignore[assignment]

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self.velocity: Tensor | None = None

    def apply(
        self, update: Tensor, ctx: RoundContext, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, Any]]:
        self.velocity = update if self.velocity is None else update + 0.9 * self.velocity
        return self.velocity, {}

    def state_dict(self) -> dict[str, Tensor]:
        return {} if self.velocity is None else {"velocity": self.velocity}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.velocity = state.get("velocity")


@pytest.fixture()
def stateful_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The two plug-ins above, registered for one test only."""
    for registry, name, cls in (
        (CLIENT_DEFENSES, "test_drift_memory", DriftMemory),
        (POST_AGGREGATORS, "test_server_momentum", ServerMomentum),
    ):
        monkeypatch.setitem(registry, name, cls)
        monkeypatch.setattr(cls, "name", name, raising=False)


def _cfg(data: Path, out: Path, **extra: Any) -> dict[str, Any]:
    return {
        "data": {"name": "fmnist", "train_fraction": 0.02, "dir": str(data)},
        "federation": {"num_clients": 6, "clients_per_round": 4, "rounds": 4},
        "local": {"epochs": 1, "batch_size": 32},
        "attack": {"enabled": False},
        "threads": 1,
        "output": {"dir": str(out.parent), "name": out.name},
        **extra,
    }


@pytest.mark.parametrize("engine", ["sequential", "batched"])
def test_a_resumed_run_keeps_every_plugins_state(
    real_data_dir: Path,
    tmp_path: Path,
    engine: str,
    stateful_plugins: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    extra = {
        "engine": engine,
        "defense": {"client": "test_drift_memory"},
        "server": {"post": ["test_server_momentum"]},
    }
    whole = run(_cfg(real_data_dir, tmp_path / "whole", **extra), progress=False)
    cut = tmp_path / "cut"
    run(_cfg(real_data_dir, cut, **extra), progress=False, callback=lambda r: r["round"] < 2)
    saved = load_extra(cut / "checkpoint.safetensors", "")
    assert {"defense_state.0.memory", "post_state.0.velocity"} <= set(saved)
    again = tmp_path / "again"
    import shutil

    shutil.copytree(cut, again)
    resumed = run(resume=cut, progress=False)
    assert torch.equal(resumed.weights, whole.weights)
    assert (cut / "rounds.jsonl").read_bytes() == (tmp_path / "whole" / "rounds.jsonl").read_bytes()
    # the control: resuming with only the rule's state restored gives another run
    monkeypatch.setattr(
        Experiment, "stateful", lambda self: {AGG_PREFIX: self.aggregator}, raising=True
    )
    forgetful = run(resume=again, progress=False)
    assert not torch.equal(forgetful.weights, whole.weights)

"""The common part of untargeted attacks that craft their updates from what the colluding
attackers see in a round (Gaussian, sign flipping, IPM, ALIE, ...).

Every attacker first trains honestly on its own data (its plan is a benign client's), so that
its own benign update exists; then `craft` replaces the attackers' rows of the round with the
attack's update. What the attackers see is the `knowledge` option: `omniscient`, every benign
update of the round; `partial`, only the benign updates they computed themselves (their own
rows before crafting). Each attack module subclasses `CraftedAttack` and implements `forge`.
In the Flower engine the crafting runs in the strategy, on the server: simulated collusion.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Hashable, Iterator
from typing import TYPE_CHECKING, Literal, TypeVar

import torch
from pydantic import Field
from torch import Tensor

from flwbc.attacks.base import Attack
from flwbc.client.local import Epoch, benign_plan
from flwbc.plugin_options import PluginOptions
from flwbc.registry import O

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


class CraftedOptions(PluginOptions):
    knowledge: Literal["omniscient", "partial"] = Field(
        "omniscient",
        description="omniscient: the attackers see every benign update of the round; partial: "
        "only the benign updates they computed on their own data",
    )


CO = TypeVar("CO", bound=CraftedOptions)


class HonestTraining(Attack[O]):
    """Attackers train on their own data exactly as benign clients do."""

    def plan(
        self, exp: ExperimentContext, t: int, c: int, generator: torch.Generator
    ) -> tuple[int, Iterator[Epoch]]:
        x, y = exp.client_data(c)
        loc = self.cfg.local
        return len(y), benign_plan(x, y, loc.batch_size, loc.epochs, generator)

    def group_key(self, exp: ExperimentContext, n: int) -> Hashable:
        return ("honest", n, self.cfg.local.batch_size, self.cfg.local.epochs)


class CraftedAttack(HonestTraining[CO]):
    """Attackers train honestly, then send an update forged from what they see."""

    Options = CraftedOptions

    def craft(
        self, exp: ExperimentContext, t: int, updates: Tensor, malicious: list[bool]
    ) -> Tensor:
        bad = [i for i, m in enumerate(malicious) if m]
        good = [i for i, m in enumerate(malicious) if not m]
        seen = updates[good] if self.options.knowledge == "omniscient" else updates[bad]
        out = updates.clone()
        out[bad] = self.forge(exp, t, seen, updates[bad], n=len(malicious), f=len(bad)).to(
            updates.dtype
        )
        return out

    @abstractmethod
    def forge(
        self, exp: ExperimentContext, t: int, seen: Tensor, own: Tensor, *, n: int, f: int
    ) -> Tensor:
        """The attackers' updates [f, P] from the benign updates they see [m, P] and their own
        honest ones [f, P]; n clients take part in the round, f of them attackers."""

"""The client-defense extension point.

A client defense acts in benign clients' local training as a client transform
(`flwbc.client.transform`), written for one client with explicit state: after every SGD step
(FL-WBC), as a gradient term (LeadFL), on the finished update (local DP). Defenses chain: a
config's `defense.client` names one or a list, applied in order. Each is one module that subclasses
`ClientDefense` and registers with `@register_client_defense("name")`; options come from
`defense.options.<name>`, validated against the class's `Options`. The built-ins are written
exactly so (`wbc.py`, `ldp.py`, `leadfl.py`).

The engines call the transform's hooks per client and know nothing else of the defense.
Attackers never defend.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Callable

from flwbc.client.transform import ClientTransform
from flwbc.config import ExperimentConfig, defense_names
from flwbc.registry import ConfiguredPlugin, O, Registry

CLIENT_DEFENSES: Registry[type[ClientDefense]] = Registry("client defense", "none or ")


class ClientDefense(ConfiguredPlugin[O], ClientTransform, ABC):
    """Base class of client defenses: one instance per experiment, built from its config; its
    hooks are `ClientTransform`'s, run for each benign client of the experiment."""


def register_client_defense(name: str) -> Callable[[type[ClientDefense]], type[ClientDefense]]:
    """Register a `ClientDefense` subclass under `name`."""
    return CLIENT_DEFENSES.register(name)


def build_client_defenses(cfg: ExperimentConfig) -> list[ClientDefense]:
    """The config's chain of client defenses, in order."""
    return [
        CLIENT_DEFENSES.lookup(name)(
            cfg, CLIENT_DEFENSES.options(name, cfg.defense.options.get(name, {}))
        )
        for name in defense_names(cfg.defense.client)
    ]

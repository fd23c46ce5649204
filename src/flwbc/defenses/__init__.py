"""Client defenses, each one module registering itself with `@register_client_defense`;
importing this package imports every module in it."""

from flwbc.defenses.base import (
    CLIENT_DEFENSES,
    ClientDefense,
    build_client_defenses,
    defense_names,
    register_client_defense,
)
from flwbc.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = [
    "CLIENT_DEFENSES",
    "ClientDefense",
    "build_client_defenses",
    "defense_names",
    "register_client_defense",
]

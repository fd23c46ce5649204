"""Client defenses, each one module registering itself with `@register_client_defense`;
importing this package imports every module in it."""

import importlib
import pkgutil

from flwbc.defenses.base import (
    CLIENT_DEFENSES,
    ClientDefense,
    build_client_defenses,
    defense_names,
    register_client_defense,
)

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = [
    "CLIENT_DEFENSES",
    "ClientDefense",
    "build_client_defenses",
    "defense_names",
    "register_client_defense",
]

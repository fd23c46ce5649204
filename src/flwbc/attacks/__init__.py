"""Attacks, each one module registering itself with `@register_attack("name")`; importing this
package imports every module in it."""

import importlib
import pkgutil

from flwbc.attacks.base import ATTACKS, Attack, build_attack, register_attack

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["ATTACKS", "Attack", "build_attack", "register_attack"]

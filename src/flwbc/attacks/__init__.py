"""Attacks, each one module registering itself with `@register_attack("name")`; importing this
package imports every module in it."""

from flwbc.attacks.base import ATTACKS, Attack, build_attack, register_attack
from flwbc.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = ["ATTACKS", "Attack", "build_attack", "register_attack"]

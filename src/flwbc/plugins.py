"""How plug-ins get in: modules that register attacks, defenses, aggregators, models,
datasets or engines when imported, the built-in ones and those from outside alike.

The built-in plug-ins are the packages in `BUILTINS`, imported by name as an outside module is.
`registered(kind)` is every plug-in of a kind by name, the built-ins loaded first: the config
checks the names it is given there, so it imports no plug-in package.

Two ways in, both loaded wherever experiment code runs (the CLI, sweep workers, analyses,
Flower ClientApps and ServerApps), since every config passes through `make_config`:
- Python entry points in the group `flwbc.plugins` of any installed distribution, e.g. in its
  pyproject.toml: `[project.entry-points."flwbc.plugins"] mine = "my_package.flwbc_plugin"`;
- a config's `plugins: [module, ...]`, importable modules (on `sys.path` or `PYTHONPATH`).

Importing a plug-in runs its code, as installing a package does: name only modules you trust.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Iterable, Mapping
from typing import Any

from flwbc.errors import FlwbcError

BUILTINS = (
    "flwbc.data",
    "flwbc.models",
    "flwbc.attacks",
    "flwbc.defenses",
    "flwbc.schedules",
    "flwbc.server",
    "flwbc.preagg",
    "flwbc.postagg",
    "flwbc.evaluation",
    "flwbc.engine",
    "flwbc.flower.engine",
)
"""The built-in plug-ins: packages that register every module in them when imported, and the
Flower engine (a module of the Flower integration, which sits above the engines' layer)."""
KINDS: dict[str, Mapping[str, Any]] = {}
"""Every kind's registry (`flwbc.registry.Registry`) by kind ('attack', 'aggregator', ...),
filled as each registry is made."""
GROUP = "flwbc.plugins"
_entry_points_loaded = False
LOADED: list[str] = []
"""Modules loaded as plug-ins in this process, in order."""


_builtins_loaded = False


def load_builtins() -> None:
    """Import the built-in plug-in packages (once: every config validation asks)."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    for name in BUILTINS:
        importlib.import_module(name)
    _builtins_loaded = True


def registered(kind: str) -> Mapping[str, Any]:
    """The plug-ins of `kind` by name, the built-ins among them."""
    load_builtins()
    return KINDS[kind]


def load_entry_points() -> None:
    """Import every module registered in the `flwbc.plugins` entry-point group (once)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    for ep in importlib.metadata.entry_points(group=GROUP):
        try:
            ep.load()
        except Exception as err:  # a broken plug-in is the user's one-line error, not ours
            raise FlwbcError(
                f"plug-in entry point '{ep.name}' ({ep.value}) failed to load: "
                f"{type(err).__name__}: {err}"
            ) from None
        if ep.value not in LOADED:
            LOADED.append(ep.value)
    _entry_points_loaded = True  # only once all loaded: a failure is reported again next time


def load_plugins(modules: Iterable[str] = ()) -> None:
    """Load the built-in plug-ins and the entry-point ones, then import each of `modules`
    (each once)."""
    load_builtins()
    load_entry_points()
    for name in modules:
        if name in LOADED:
            continue
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            raise FlwbcError(
                f"plug-in module '{name}' not found ({err}); put it on PYTHONPATH or install it"
            ) from None
        except Exception as err:
            raise FlwbcError(
                f"plug-in module '{name}' failed to load: {type(err).__name__}: {err}"
            ) from None
        LOADED.append(name)

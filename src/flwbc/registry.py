"""Registries of plug-ins by name, one per kind (attacks, client defenses, aggregators, ...).

A `Registry` is a dict from name to plug-in class with the kind's decorator (`register`) and
its one-line error for an unknown name (`lookup`); `build` makes an instance whose options are
validated against the class's `Options`. `import_submodules` imports every module of a kind's
package, so that a built-in plug-in is one file that registers itself.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from flwbc.errors import FlwbcError
from flwbc.plugin_options import validate_options
from flwbc.plugins import KINDS, load_builtins

if TYPE_CHECKING:
    from torch import Tensor

    from flwbc.config import ExperimentConfig

T = TypeVar("T")
O = TypeVar("O", bound=BaseModel | None)  # noqa: E741
"""A plug-in's options model (`Options`), or None for one that takes none."""


class Registry(dict[str, T]):
    """Plug-ins of one kind by name."""

    def __init__(self, kind: str, choices_prefix: str = "") -> None:
        super().__init__()
        self.kind = kind
        self.choices_prefix = choices_prefix
        self._origins: dict[str, str] = {}
        KINDS[kind] = self

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator registering a plug-in class under `name` (and setting its `name`)."""

        def deco(cls: T) -> T:
            self.add(name, cls)
            cls.name = name  # type: ignore[attr-defined]
            return cls

        return deco

    def add(self, name: str, entry: T, origin: Any = None) -> None:
        """Register `entry` as `name`. A name already taken by an entry defined elsewhere is
        refused, so a plug-in never silently replaces a built-in; the same definition again
        (a module imported anew) replaces it. `origin` is what defines the entry (default: the
        entry itself), e.g. a dataset's loader."""
        new = _origin(origin if origin is not None else entry)
        old = self._origins.get(name)
        if name in self and old != new:
            raise FlwbcError(
                f"a {self.kind} named '{name}' is already registered (by {old}); "
                f"choose another name for the one in {new}"
            )
        self[name] = entry
        self._origins[name] = new

    def lookup(self, name: str) -> T:
        """The plug-in registered as `name`; an unknown name lists the registered ones."""
        if name not in self:
            load_builtins()  # a built-in outside its kind's package (the Flower engine)
        if name not in self:
            raise FlwbcError(
                f"unknown {self.kind} '{name}'; choose {self.choices_prefix}one of "
                f"{', '.join(sorted(self))}"
            )
        return self[name]

    def options(self, name: str, given: dict[str, Any]) -> BaseModel | None:
        """`given` validated against the options of the plug-in `name`."""
        return validate_options(self.kind, name, getattr(self.lookup(name), "Options", None), given)


def _origin(entry: Any) -> str:
    """Where a registered entry was defined: module and qualified name."""
    target = getattr(entry, "__func__", entry)
    qualname = getattr(target, "__qualname__", type(target).__name__)
    return f"{getattr(target, '__module__', '?')}.{qualname}"


class Stateful:
    """What a plug-in of any kind carries across rounds: `state_dict` is saved with every
    checkpoint (under the plug-in's place in the experiment, `Experiment.stateful`) and handed
    back to `load_state_dict` on resume, so a resumed run is byte-identical to one never
    interrupted. Default: no state."""

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors the plug-in carries across rounds."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore what `state_dict` returned (on resume)."""
        return None


class ConfiguredPlugin(Stateful, Generic[O]):
    """Base of the plug-ins built once per experiment from its config and their own validated
    options (attacks, schedules, client defenses). `self.options` is an instance of the class's
    `Options` (typed by the subclass, `Attack[IPMOptions]`); built without options, a plug-in
    that has an `Options` model takes its defaults, stated there once."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel] | None] = None

    def __init__(self, cfg: ExperimentConfig, options: O | None = None) -> None:
        self.cfg = cfg
        self.options: O = default_options(type(self), options)


def default_options(cls: type, options: Any) -> Any:
    """`options`, or the defaults of `cls.Options` when none are given (and it has one)."""
    model = getattr(cls, "Options", None)
    return model() if options is None and model is not None else options


def import_submodules(package: str, path: Iterable[str], skip: tuple[str, ...] = ("base",)) -> None:
    """Import every module of `package` (found in `path`) except `skip`."""
    for mod in pkgutil.iter_modules(path):
        if mod.name not in skip:
            importlib.import_module(f"{package}.{mod.name}")

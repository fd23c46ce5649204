"""`flwbc list`: every registered plug-in of each kind, with its one-line description and its
options (name, type, default or 'required', bounds and description), built-in and loaded ones
alike."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from flwbc.errors import FlwbcError, did_you_mean
from flwbc.plugin_options import signature_model


@dataclass(frozen=True)
class Option:
    name: str
    type: str
    default: Any
    limits: str = ""
    description: str = ""
    required: bool = False
    """The option has no default: a config must give it (`default` is then None)."""


@dataclass(frozen=True)
class Entry:
    name: str
    description: str
    options: tuple[Option, ...] = ()
    notes: str = ""


def first_line(obj: Any) -> str:
    """The first paragraph of an object's own docstring (not one it inherits), else of its
    module's, on one line."""
    own = obj.__dict__.get("__doc__") if isinstance(obj, type) else obj.__doc__
    doc = inspect.cleandoc(own) if own else inspect.getdoc(inspect.getmodule(obj)) or ""
    return " ".join(doc.split("\n\n")[0].split())


_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def model_options(model: type[BaseModel] | None) -> tuple[Option, ...]:
    """The fields of a plug-in's pydantic `Options`, with their bounds and descriptions."""
    if model is None:
        return ()
    out = []
    for name, f in model.model_fields.items():
        limits = [
            f"{sign} {getattr(m, attr)}"
            for m in f.metadata
            for attr, sign in _BOUNDS
            if getattr(m, attr, None) is not None
        ]
        if any(getattr(m, "allow_inf_nan", True) is False for m in f.metadata):
            limits.append("finite")
        ann = f.annotation
        plain = typing.get_origin(ann) is None and hasattr(ann, "__name__")
        required = f.is_required()
        out.append(
            Option(
                name,
                ann.__name__ if plain else str(ann).replace("typing.", ""),
                None if required else f.get_default(call_default_factory=True),
                ", ".join(limits),
                f.description or "",
                required,
            )
        )
    return tuple(out)


def _attacks() -> list[Entry]:
    from flwbc.attacks import ATTACKS

    return [Entry(n, first_line(cls), model_options(cls.Options), "") for n, cls in ATTACKS.items()]


def _defenses() -> list[Entry]:
    from flwbc.defenses import CLIENT_DEFENSES

    return [
        Entry(n, first_line(cls), model_options(cls.Options), "")
        for n, cls in CLIENT_DEFENSES.items()
    ]


def _aggregators() -> list[Entry]:
    from flwbc.server import AGGREGATORS
    from flwbc.server.base import options_model

    return [
        Entry(
            name,
            first_line(cls),
            model_options(options_model(cls)),
            "rank-based (ignores FedAvg weights)" if cls.rank_based else "",
        )
        for name, cls in AGGREGATORS.items()
    ]


def _models() -> list[Entry]:
    from flwbc.models import MODELS

    fixed = ("in_channels", "image_size", "num_classes")
    return [
        Entry(n, first_line(f), model_options(signature_model(n, f, fixed)))
        for n, f in MODELS.items()
    ]


def _datasets() -> list[Entry]:
    from flwbc.data import DATASETS

    return [
        Entry(d.name, d.description, (), f"{d.num_classes} classes; model auto: {d.default_model}")
        for d in DATASETS.values()
    ]


def _engines() -> list[Entry]:
    from flwbc.engine import ENGINES

    return [
        Entry(e.name, e.description, (), "" if e.in_process else f"replayed on {e.replay}")
        for e in ENGINES.values()
    ]


def _schedules() -> list[Entry]:
    from flwbc.schedules import SCHEDULES

    return [Entry(n, first_line(c), model_options(c.Options)) for n, c in SCHEDULES.items()]


def _pre() -> list[Entry]:
    from flwbc.preagg import PRE_AGGREGATORS

    return [
        Entry(n, first_line(cls), model_options(cls.Options)) for n, cls in PRE_AGGREGATORS.items()
    ]


def _post() -> list[Entry]:
    from flwbc.postagg import POST_AGGREGATORS

    return [
        Entry(n, first_line(cls), model_options(cls.Options)) for n, cls in POST_AGGREGATORS.items()
    ]


def _metrics() -> list[Entry]:
    from flwbc.evaluation import BUILT_IN, METRICS

    return [
        Entry(
            n,
            first_line(cls),
            model_options(cls.Options),
            ("always measured; " if n in BUILT_IN else "") + "fields: " + ", ".join(cls.fields),
        )
        for n, cls in METRICS.items()
    ]


def _partitions() -> list[Entry]:
    from flwbc.data import PARTITIONS

    fixed = ("pool", "labels", "num_clients", "rng")
    return [
        Entry(n, text, model_options(signature_model(n, fn, fixed)))
        for n, (fn, text) in PARTITIONS.items()
    ]


KINDS: dict[str, Callable[[], list[Entry]]] = {
    "attacks": _attacks,
    "schedules": _schedules,
    "defenses": _defenses,
    "pre": _pre,
    "aggregators": _aggregators,
    "post": _post,
    "metrics": _metrics,
    "datasets": _datasets,
    "partitions": _partitions,
    "engines": _engines,
    "models": _models,
}


def catalog(kind: str | None = None) -> dict[str, list[Entry]]:
    """Registered plug-ins by kind (all kinds, or one), each sorted by name."""
    from flwbc.plugins import load_plugins

    load_plugins()
    if kind is not None and kind not in KINDS:
        raise FlwbcError(
            f"unknown kind '{kind}'{did_you_mean(kind, KINDS)}; choose one of {', '.join(KINDS)}"
        )
    kinds = [kind] if kind is not None else list(KINDS)
    return {k: sorted(KINDS[k](), key=lambda e: e.name) for k in kinds}


def render(entries: dict[str, list[Entry]]) -> str:
    """Plain text: per kind, each plug-in, its description and options."""
    lines: list[str] = []
    for kind, items in entries.items():
        lines.append(f"{kind}:")
        for e in items:
            lines.append(f"  {e.name}: {e.description}" + (f" [{e.notes}]" if e.notes else ""))
            for o in e.options:
                kind_text = f": {o.type}" if o.type else ""
                default = ", required" if o.required else f" = {o.default!r}"
                limits = f" ({o.limits})" if o.limits else ""
                desc = f": {o.description}" if o.description else ""
                lines.append(f"      {o.name}{kind_text}{default}{limits}{desc}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"

"""Typed options for plug-ins: a plug-in class declares `Options`, a pydantic model, and its
options from a config are validated against it when the experiment is built, with one line
that names the plug-in, the field and the allowed range."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from flwbc.errors import FlwbcError, did_you_mean


class PluginOptions(BaseModel):
    """Base of a plug-in's options: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StrictOptions(PluginOptions):
    """Base of the options of a plug-in whose constructor's signature declared them before:
    strict as `signature_model` is (a string is not a number, a float not an integer, a bool
    neither), so that declaring them, with bounds and descriptions, accepts the same values."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def validate_options(
    kind: str, name: str, model: type[BaseModel] | None, given: dict[str, Any]
) -> BaseModel | None:
    """`given` validated against the plug-in's options model (None: it takes no options)."""
    if model is None:
        if given:
            raise FlwbcError(f"{kind} '{name}' takes no options (got {', '.join(sorted(given))})")
        return None
    try:
        return model.model_validate(given)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            takes = ", ".join(model.model_fields) or "no options"
            hint = did_you_mean(field, model.model_fields)
            raise FlwbcError(
                f"{kind} '{name}' has no option {field} (it takes: {takes}){hint}"
            ) from None
        msg = first["msg"].removeprefix("Value error, ")
        raise FlwbcError(
            f"{kind} '{name}': option {field} = {first.get('input')!r}: {msg}"
        ) from None


def signature_model(
    name: str, fn: Callable[..., Any], skip: tuple[str, ...] = ()
) -> type[BaseModel]:
    """A pydantic model of a callable's keyword options, from their annotations and defaults
    (the generic fallback for plug-ins that declare no `Options`). Strict: a string is not a
    number here (the CLI and config files give typed values). An annotation
    `Annotated[int, Field(ge=1, description=...)]` gives the option its bounds and the
    description `flwbc list` shows."""
    fields: dict[str, Any] = {}
    hints = get_type_hints(fn.__init__ if isinstance(fn, type) else fn, include_extras=True)
    for p in inspect.signature(fn).parameters.values():
        if p.name in ("self", *skip) or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = ... if p.default is p.empty else p.default
        fields[p.name] = (hints.get(p.name, Any), default)
    return create_model(
        f"{name}_options", __config__=ConfigDict(extra="forbid", strict=True), **fields
    )

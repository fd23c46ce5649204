"""Typed options for plug-ins: a plug-in class declares `Options`, a pydantic model, and its
options from a config are validated against it when the experiment is built, with one line
that names the plug-in, the field and the allowed range."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from flwbc.errors import FlwbcError


class PluginOptions(BaseModel):
    """Base of a plug-in's options: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
            raise FlwbcError(f"{kind} '{name}' has no option {field} (it takes: {takes})") from None
        msg = first["msg"].removeprefix("Value error, ")
        raise FlwbcError(
            f"{kind} '{name}': option {field} = {first.get('input')!r}: {msg}"
        ) from None

"""Values typed on a command line: scalars (`0.2`, `1e38`, `true`, `null`, text) and mappings
(`KEY=VALUE,KEY=VALUE` or a JSON/YAML mapping), read the same way everywhere."""

from __future__ import annotations

import math
from typing import Any

import yaml

from flwbc.errors import FlwbcError


def parse_scalar(raw: str) -> Any:
    """A number when `raw` reads as one (`1e38` included, which YAML 1.1 leaves a string),
    else YAML's reading (true, null, ...), else the text itself."""
    text = raw.strip()
    for number in (int, float):
        try:
            value = number(text)
        except ValueError:
            continue
        if math.isfinite(value):  # "nan" and "inf" stay text, which numeric fields reject
            return value
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, bool | type(None)) else text


def parse_mapping(raw: str) -> dict[str, Any]:
    """`KEY=VALUE,KEY=VALUE` or a JSON/YAML mapping such as `{"beta": 0.2}`."""
    text = raw.strip()
    if text.startswith("{"):
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = None
        if not isinstance(value, dict):
            raise FlwbcError(f"cannot read {raw!r} as a mapping; write KEY=VALUE,KEY=VALUE")
        return {str(k): parse_scalar(v) if isinstance(v, str) else v for k, v in value.items()}
    out: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise FlwbcError(f"expected KEY=VALUE,KEY=VALUE or a JSON mapping, got {raw!r}")
        out[key.strip()] = parse_scalar(value)
    return out

"""The one exception type a user mistake raises: the CLI prints its message as one line; and
the helpers that word such lines (a close match for a misspelt name, where a file fails to
parse)."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable


class FlwbcError(Exception):
    """A user-facing error (bad config, missing data, bad file) with a one-line message."""


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """` (did you mean 'x'?)` naming the choices closest to a misspelt `word` (up to three,
    closest first), each shown after `prefix` (a section's dotted path), or '' when none is
    close."""
    close = difflib.get_close_matches(word, list(choices), n=3)
    if not close:
        return ""
    return " (did you mean " + " or ".join(f"'{prefix}{c}'" for c in close) + "?)"


def parse_error_text(err: Exception) -> str:
    """Where and why a YAML or JSON document failed to parse, on one line: `line L, column C:
    problem`, with the construct it was inside and where that began (an unclosed bracket is
    only noticed where the document ends)."""
    if isinstance(err, json.JSONDecodeError):
        return f"line {err.lineno}, column {err.colno}: {err.msg}"
    mark = getattr(err, "problem_mark", None)  # yaml.MarkedYAMLError, 0-based
    problem = getattr(err, "problem", None)
    if mark is None or not problem:
        return " ".join(str(err).split("\n")[0].split())
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, where = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and where is not None:
        text += f" ({context} from line {where.line + 1}, column {where.column + 1})"
    elif context:
        text += f" ({context})"
    return text

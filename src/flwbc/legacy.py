"""The one shim between the config layout before plug-ins held their own options and now.

Before, the built-in client defenses FL-WBC and local DP read config sections of their own,
`defense.wbc` and `defense.ldp`; now every client defense reads `defense.options.<name>`, as a
plug-in from outside always did. `upgrade` moves an old config's sections to their new places
(configs, spec files, run directories' config.json and CLI flags all pass through it when they
are validated); `key_view` maps a validated config back to the layout run keys were computed
on, so every stored run keeps its key.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

MOVED_SECTIONS: dict[tuple[str, str], tuple[str, str, str]] = {
    ("defense", "wbc"): ("defense", "options", "wbc"),
    ("defense", "ldp"): ("defense", "options", "ldp"),
}
"""Old section path -> its new place."""


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """`data` (a raw config mapping) with every moved section at its new place, merged under
    what the new place already holds (the new place wins a field given in both). `data` itself
    is left unchanged."""
    if not any(old[1] in (data.get(old[0]) or {}) for old in MOVED_SECTIONS):
        return data
    out = copy.deepcopy(data)
    for (section, name), (s2, key, n2) in MOVED_SECTIONS.items():
        sec = out.get(section)
        if not isinstance(sec, dict) or name not in sec:
            continue
        old = sec.pop(name)
        if old is None:
            continue
        if not isinstance(old, dict):
            raise ValueError(f"{section}.{name} must be a mapping of options, got {old!r}")
        target = out.setdefault(s2, {}).setdefault(key, {})
        if not isinstance(target, dict):
            continue  # the new place's own validation names the error
        target[n2] = {**old, **(target.get(n2) or {})}
    return out


def key_view(
    dump: dict[str, Any], non_default: Callable[[str, dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    """A validated config's dump (`exclude_defaults`) in the layout run keys were computed on:
    each moved section back at its old place holding only the options that differ from their
    defaults, as the old sections' dump did. `non_default(name, options)` gives those, in
    their validated (JSON) form."""
    out = copy.deepcopy(dump)
    for (section, name), (s2, key, n2) in MOVED_SECTIONS.items():
        holder = out.get(s2, {}).get(key)
        if not isinstance(holder, dict) or n2 not in holder:
            continue
        opts = non_default(n2, holder.pop(n2))
        if not holder:
            out[s2].pop(key)
        if opts:
            out.setdefault(section, {})[name] = opts
        if not out.get(s2, True):
            out.pop(s2)
    return out

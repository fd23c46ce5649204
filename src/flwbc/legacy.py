"""The one shim between the config layout before plug-ins held their own options and now.

Before, the built-in partitions read fields of the `data` section (dirichlet_alpha,
num_shards, shards_per_client), now `data.partition_options`; the built-in client defenses
FL-WBC and local DP read config sections of their own,
`defense.wbc` and `defense.ldp`, and the paper's targeted attack read seven fields of the
`attack` section (alpha, epochs, mode, emulate_average, boost, kernel_reg, kernel_batch); now
every plug-in reads its `options`, as a plug-in from outside always did. `upgrade` moves an old
config's values to their new places (configs, spec files, run directories' config.json and CLI
flags all pass through it when they are validated); the targeted attack's fields given for
another attack, which never read them, are dropped. `key_view` maps a validated config back to
the layout run keys were computed on, so every stored run keeps its key.
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

TARGETED = "targeted"
"""The attack whose options were the `attack` section's fields (the section's default attack)."""
MOVED_ATTACK_FIELDS = (
    "alpha",
    "epochs",
    "mode",
    "emulate_average",
    "boost",
    "kernel_reg",
    "kernel_batch",
)

MOVED_DATA_FIELDS: dict[str, tuple[str, str, type, Any]] = {
    "dirichlet_alpha": ("dirichlet", "alpha", float, 0.5),
    "num_shards": ("shards", "num_shards", int, 200),
    "shards_per_client": ("shards", "shards_per_client", int, 2),
}
"""Old `data` field -> (the partition that read it, its option there, its type, its old
default). The data section held them for the built-in partitions; other partitions ignored
them."""

NonDefault = Callable[[str, str, dict[str, Any]], dict[str, Any]]
"""(kind, name, options) -> the options that differ from the plug-in's defaults, as JSON."""


ONLY_TARGETED = {"mode": "real", "emulate_average": "intended"}
"""Moved fields that the round plan read for every attack before they moved (so for another
attack a value other than these defaults meant something) and that now only the targeted
attack reads: for another attack they are errors, not dropped."""


def _merge(old: dict[str, Any], new: Any, where: str, place: str) -> dict[str, Any]:
    """`old` and `new` options merged; a field given in both with different values is an
    error naming both places."""
    if new is None:
        return dict(old)
    if not isinstance(new, dict):
        raise ValueError(f"{place} must be a mapping of options, got {new!r}")
    clash = sorted(k for k in old.keys() & new.keys() if old[k] != new[k])
    if clash:
        raise ValueError(
            f"{', '.join(f'{where}.{k}' for k in clash)} and {place}.{clash[0]} are the same "
            "option given twice with different values; give it once"
        )
    return {**old, **new}


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """`data` (a raw config mapping) with every moved value at its new place, merged with what
    the new place already holds (a field given in both places with different values is an
    error). `data` itself is left unchanged."""
    attack = data.get("attack")
    moved_fields = isinstance(attack, dict) and any(f in attack for f in MOVED_ATTACK_FIELDS)
    moved_sections = any(
        isinstance(data.get(old[0]), dict) and old[1] in data[old[0]] for old in MOVED_SECTIONS
    )
    section = data.get("data")
    moved_data = isinstance(section, dict) and any(f in section for f in MOVED_DATA_FIELDS)
    if not (moved_fields or moved_sections or moved_data):
        return data
    out = copy.deepcopy(data)
    if moved_data:
        d = out["data"]
        for f, (partition, option, _, _) in MOVED_DATA_FIELDS.items():
            if f not in d:
                continue
            value = d.pop(f)
            if d.get("partition", "iid") == partition:
                given = d.get("partition_options")
                if isinstance(given, dict) and option in given and given[option] != value:
                    raise ValueError(
                        f"data.{f} and data.partition_options.{option} are the same option "
                        "given twice with different values; give it once"
                    )
                d["partition_options"] = _merge({option: value}, given, "data", "data")
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
        target[n2] = _merge(old, target.get(n2), f"{section}.{name}", f"{s2}.{key}.{n2}")
    if moved_fields:
        att = out["attack"]
        fields = {f: att.pop(f) for f in MOVED_ATTACK_FIELDS if f in att}
        name = att.get("name", TARGETED)
        if name == TARGETED:
            att["options"] = _merge(fields, att.get("options"), "attack", "attack.options")
        else:
            for f, default in ONLY_TARGETED.items():
                if f in fields and fields[f] != default:
                    raise ValueError(
                        f"attack.{f} = {fields[f]!r} is an option of the targeted attack, not "
                        f"of '{name}'"
                    )
    return out


def ignored_attack_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The targeted attack's old fields that `data` (a raw config) gives for another attack:
    dropped by `upgrade`, but part of the key such a run was stored under."""
    attack = data.get("attack")
    if not isinstance(attack, dict) or attack.get("name", TARGETED) == TARGETED:
        return {}
    return {f: attack[f] for f in MOVED_ATTACK_FIELDS if f in attack}


def key_view(raw: dict[str, Any], dump: dict[str, Any], non_default: NonDefault) -> dict[str, Any]:
    """A validated config's dump (`exclude_defaults`) in the layout run keys were computed on:
    each moved value back at its old place when it differs from its default, as the old
    layout's dump had it (the built-in partitions' options always at their old `data` fields,
    however given, so one experiment has one key). `raw` is the config as given (for the
    fields an old layout gave that were ignored, and dropped on the way in)."""
    out = copy.deepcopy(dump)
    for (section, name), (s2, key, n2) in MOVED_SECTIONS.items():
        holder = out.get(s2, {}).get(key)
        if not isinstance(holder, dict) or n2 not in holder:
            continue
        opts = non_default("client defense", n2, holder.pop(n2))
        if not holder:
            out[s2].pop(key)
        if opts:
            out.setdefault(section, {})[name] = opts
        if not out.get(s2, True):
            out.pop(s2)
    attack = out.get("attack", {})
    if attack.get("name", TARGETED) == TARGETED and "options" in attack:
        attack.update(non_default("attack", TARGETED, attack.pop("options")))
    ignored = ignored_attack_fields(raw)
    if ignored:
        out.setdefault("attack", {}).update(non_default("attack", TARGETED, ignored))
    if out.get("attack") == {}:
        out.pop("attack")
    given = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    data = out.setdefault("data", {})
    options = data.get("partition_options")
    partition = data.get("partition", "iid")
    for f, (reader, option, kind, default) in MOVED_DATA_FIELDS.items():
        if partition == reader and isinstance(options, dict) and option in options:
            value = kind(options.pop(option))
        elif partition != reader and f in given:  # ignored, but part of the old key
            value = kind(given[f])
        else:
            continue
        if value != default:
            data[f] = value
    if isinstance(options, dict) and not options:
        data.pop("partition_options")
    if not data:
        out.pop("data")
    return out

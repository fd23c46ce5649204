"""Backdoor success of other attacks' triggers (`backdoor_acc.<attack>`), every round: the
baseline of a backdoor measured on a run that does not carry it.

A backdoor's success rate (`flwbc.evaluation.backdoor`) is not zero on a model nobody attacked:
some non-target images carrying the trigger are classified as the target anyway. A benchmark
that compares an attacked run with its clean run needs that rate on the clean run, at the same
rounds and on the same test images. This metric builds each named backdoor attack (`{name,
options}`, as under `attack`) only for its trigger and target, and measures the success rate of
that trigger on the global model exactly as the attacked run's `backdoor_acc` is measured;
`include_target` as the `backdoor` metric's option of that name (default false: non-target
test images only), for baselines of runs that score every test image as LeadFL's code does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator
from torch import Tensor

from flwbc.attacks.backdoor import BackdoorAttack
from flwbc.config import PluginRef
from flwbc.errors import FlwbcError
from flwbc.evaluation.backdoor import backdoor_success
from flwbc.evaluation.base import Metric, register_metric
from flwbc.plugin_options import PluginOptions

if TYPE_CHECKING:
    from flwbc.attacks import Attack
    from flwbc.context import ExperimentContext

PREFIX = "backdoor_acc."


class TriggerOptions(PluginOptions):
    attacks: list[PluginRef] = Field(
        min_length=1,
        description="the backdoor attacks whose triggers are measured, each a name or {name, "
        "options}; field backdoor_acc.<name> each (names must differ)",
    )
    include_target: bool = Field(
        False,
        description="also score the test images of the target class, as the backdoor "
        "metric's option of that name (LeadFL's official code); false: non-target images only",
    )

    @field_validator("attacks")
    @classmethod
    def _distinct(cls, refs: list[PluginRef]) -> list[PluginRef]:
        names = [r.name for r in refs]
        if len(set(names)) != len(names):
            raise ValueError(f"attack names must differ, got {names}")
        return refs


def is_backdoor(name: str) -> bool:
    """Whether the registered attack `name` implants a backdoor (measures `backdoor`)."""
    from flwbc.attacks import ATTACKS

    return "backdoor" in ATTACKS.lookup(name).metrics


def baseline_metric(
    attacks: Iterable[dict[str, Any]],
    *,
    skip_ambiguous: bool = False,
    metrics: Iterable[Any] = (),
) -> dict[str, Any] | None:
    """The `trigger` metric that measures, on a clean run, the trigger of every backdoor among
    `attacks` (attack config sections: `name` and `options`), each once in order; None when
    there is none. Two backdoors of one name with different options cannot both be measured
    (their fields would be one): `skip_ambiguous` leaves them out, else the metric refuses
    them. It scores the images the attacked runs' `backdoor` metric scores: with
    `include_target` when a `backdoor` entry among their `eval.metrics` (`metrics`) sets it."""
    refs: list[dict[str, Any]] = []
    for section in attacks:
        name = str(section.get("name", "targeted"))
        ref = {"name": name, "options": section.get("options", {})}
        if is_backdoor(name) and ref not in refs:
            refs.append(ref)
    refs = _merge_same_trigger(refs)
    if skip_ambiguous:
        names = [r["name"] for r in refs]
        refs = [r for r in refs if names.count(r["name"]) == 1]
    if not refs:
        return None
    options: dict[str, Any] = {"attacks": refs}
    if any(
        isinstance(m, dict)
        and m.get("name") == "backdoor"
        and (m.get("options") or {}).get("include_target")
        for m in metrics
    ):
        options["include_target"] = True
    return {"name": "trigger", "options": options}


def _merge_same_trigger(refs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Refs of one name whose triggers are equal (the same values, defaults filled in, of the
    options the attack declares as shaping its trigger, `trigger_fields`; e.g. `wbc_aware`'s
    modes) measure one trigger: when every ref of that name has the same trigger they become
    one ref holding only those options. Anything else is left exactly as it is (names given
    once, attacks that declare no trigger fields, and names with different triggers)."""
    from flwbc.attacks import ATTACKS

    groups: dict[str, list[dict[str, Any]]] = {}
    for ref in refs:
        groups.setdefault(ref["name"], []).append(ref)
    out: list[dict[str, Any]] = []
    for ref in refs:
        same = groups[ref["name"]]
        cls = ATTACKS.lookup(ref["name"])
        if len(same) == 1 or not issubclass(cls, BackdoorAttack) or cls.Options is None:
            out.append(ref)
            continue
        fields, model = cls.trigger_fields, cls.Options
        shapes = [
            {
                k: v
                for k, v in model.model_validate(r["options"]).model_dump().items()
                if k in fields
            }
            for r in same
        ]
        if any(sh != shapes[0] for sh in shapes):
            out.append(ref)
            continue
        merged = {
            "name": ref["name"],
            "options": {k: v for k, v in ref["options"].items() if k in fields},
        }
        if not any(r["name"] == ref["name"] for r in out):
            out.append(merged)
    return out


def trigger_field(attack: str) -> str:
    """The record field holding the success rate of `attack`'s trigger."""
    return PREFIX + attack


@register_metric("trigger")
class TriggerBaseline(Metric[TriggerOptions]):
    """Success rate of each named backdoor attack's global trigger on the test set
    (backdoor_acc.<attack>), for runs that do not carry that attack (baselines)."""

    Options = TriggerOptions
    fields = ()

    def __init__(self, options: TriggerOptions | None = None) -> None:
        if options is None:
            raise FlwbcError("metric 'trigger' needs option attacks (a list of backdoor attacks)")
        super().__init__(options)
        self.refs = self.options.attacks
        self.fields = tuple(trigger_field(r.name) for r in self.refs)
        self._built: list[tuple[str, Attack]] | None = None
        self._triggered: dict[str, Tensor] = {}

    def _attacks(self, exp: ExperimentContext) -> list[tuple[str, Attack]]:
        if self._built is None:
            from flwbc.attacks import ATTACKS

            built = []
            for ref in self.refs:
                attack = ATTACKS.lookup(ref.name)(exp.cfg, ATTACKS.options(ref.name, ref.options))
                if not isinstance(attack, BackdoorAttack):
                    raise FlwbcError(f"metric 'trigger': attack '{ref.name}' has no trigger")
                built.append((ref.name, attack))
            self._built = built
        return self._built

    def check(self, exp: ExperimentContext) -> None:
        self._attacks(exp)

    def measure(self, exp: ExperimentContext, w: Tensor, t: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, attack in self._attacks(exp):
            if name not in self._triggered:
                self._triggered[name] = attack.test_trigger(exp)  # type: ignore[attr-defined]
            out[trigger_field(name)] = backdoor_success(
                exp,
                w,
                self._triggered[name],
                attack.target,  # type: ignore[attr-defined]
                exp.cfg.eval.batch_size,
                t,
                include_target=self.options.include_target,
            )
        return out

"""The metric extension point: what is measured on the new global model after every round and
written into that round's record in `rounds.jsonl`.

Every run records the built-in `accuracy` (benign test accuracy and loss, every `eval.every`
rounds and at the last) and `target` (misclassification confidence and accuracy on D_M, when
the attack has one); a config's `eval.metrics` adds registered metrics, each `{name, options}`,
and an attack adds those in its `metrics` (a backdoor attack: `backdoor`) to its runs alone.
A metric is one module that subclasses `Metric`, lists the record fields it writes (`fields`,
always present, null when not measured) and registers with `@register_metric("name")`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Generic

from pydantic import BaseModel
from torch import Tensor

from flwbc.errors import FlwbcError
from flwbc.registry import O, Registry, Stateful, default_options

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext

METRICS: Registry[type[Metric]] = Registry("metric")
BUILT_IN = ("accuracy", "target")
"""Measured in every run, in this order, before any a config adds."""


class Metric(Stateful, ABC, Generic[O]):
    """Base class of per-round metrics; `self.options` is an instance of the class's `Options`
    (typed by the subclass, `Metric[AccuracyDropOptions]`), its defaults when none are given."""

    name: ClassVar[str] = ""
    fields: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type[BaseModel] | None] = None

    def __init__(self, options: O | None = None) -> None:
        self.options: O = default_options(type(self), options)

    @abstractmethod
    def measure(self, exp: ExperimentContext, w: Tensor, t: int) -> dict[str, Any]:
        """The fields measured on global weights `w` after round t (a subset of `fields`)."""

    def check(self, exp: ExperimentContext) -> None:
        """Raise `FlwbcError` (one line) for options that do not fit the prepared experiment,
        before any round runs. Default: nothing to check."""
        return None

    def derive(self, record: dict[str, Any], t: int) -> dict[str, Any]:
        """Fields computed from what the metrics measured in round t (`record`), after all of
        them have measured (e.g. a difference to another run's record). Default: none."""
        return {}


def register_metric(name: str) -> Callable[[type[Metric]], type[Metric]]:
    """Register a `Metric` subclass under `name`."""
    return METRICS.register(name)


def build_metrics(extra: list[Any], attack: Any = None) -> list[Metric]:
    """The built-in metrics, then those a config's `eval.metrics` names ({name, options}),
    then those the experiment's attack (an `flwbc.attacks.Attack`, None without one) has every
    run of it record (`Attack.metrics`, e.g. a backdoor's success rate) that are not there
    yet."""
    out: list[Metric] = [METRICS[n](None) for n in BUILT_IN]
    for ref in extra:
        if ref.name not in METRICS or ref.name in BUILT_IN:
            choices = sorted(set(METRICS) - set(BUILT_IN))
            raise FlwbcError(
                f"unknown metric '{ref.name}'; {', '.join(BUILT_IN)} are always measured, "
                f"others: {', '.join(choices) or 'none registered'}"
            )
        out.append(METRICS[ref.name](METRICS.options(ref.name, ref.options)))
    for name in attack.metrics if attack is not None else ():
        if all(m.name != name for m in out):
            out.append(METRICS.lookup(name)(None))
    return out


def measure_round(
    metrics: list[Metric], exp: ExperimentContext, w: Tensor, t: int
) -> dict[str, Any]:
    """Every metric's fields for round t, in order, null where not measured."""
    record: dict[str, Any] = {}
    for m in metrics:
        got = m.measure(exp, w, t)
        record.update({f: got.get(f) for f in m.fields})
    for m in metrics:
        derived = m.derive(record, t)
        record.update({f: derived[f] for f in m.fields if f in derived})
    return record

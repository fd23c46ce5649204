"""Bursty attacks: the number of attackers changes from round to round, drawn from a wide
distribution (LeadFL, Zhu, Roos & Chen, ICML 2023: "bursty adversarial patterns with a high
variance in the number of malicious clients" circumvent server-side defenses).

LeadFL's code (chaoyitud/LeadFL, `fltk/core/federator.py`, `Federator.exec_round`) reseeds
numpy with the round number every round and then sets the round's number of attackers by its
`selection_method`:
- `random_clients`: uniform over the list [0, 0, 2, 2, 5] (0, 2 or 5 attackers among 10 with
  probabilities 0.4, 0.4, 0.2). This is `distribution: choice`, with that list as the default.
- `random` (its template config, `configs/template.yaml`: 25 of 100 clients malicious, 10 a
  round): 10 clients drawn uniformly from all 100, so the count is hypergeometric. This is
  `distribution: hypergeometric` with `population: 25`.
- in every method, its (0-based) rounds 0, 10 and 12 are forced to 5 attackers and 5 benign
  clients: `forced_rounds: [1, 11, 13]` (1-based) with `forced_attackers: 5` reproduces that.
`distribution: burst` is a simpler parametric family of flwbc's own: each round, with
probability `prob`, a burst whose size is uniform on [min, max].

Each round's count is one draw from the stream (seed, "bursty", t), so round t never depends on
earlier rounds (LeadFL's per-round reseeding has the same property).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from flwbc.errors import FlwbcError
from flwbc.plugin_options import PluginOptions
from flwbc.rng import numpy_rng
from flwbc.schedules.base import Schedule, register_schedule

if TYPE_CHECKING:
    from flwbc.config import ExperimentConfig

LEADFL_COUNTS = (0, 0, 2, 2, 5)
"""LeadFL's `random_clients` list: each round's number of attackers is uniform over it."""


class BurstyOptions(PluginOptions):
    distribution: Literal["choice", "burst", "hypergeometric"] = Field(
        "choice",
        description="choice: uniform over the list `counts` (LeadFL's random_clients); burst: "
        "with probability `prob` a burst of size uniform on [min, max]; hypergeometric: the "
        "attackers among clients_per_round clients drawn from num_clients of which "
        "`population` are malicious (LeadFL's random selection)",
    )
    counts: list[int] = Field(
        default_factory=lambda: list(LEADFL_COUNTS),
        min_length=1,
        description="choice: the list each round's count is drawn from uniformly (repeat a "
        "value to weight it); default LeadFL's [0, 0, 2, 2, 5]",
    )
    prob: float = Field(0.5, ge=0, le=1, description="burst: chance that a round is attacked")
    min: int = Field(1, ge=1, description="burst: smallest burst size")
    max: int | None = Field(
        None, ge=1, description="burst: largest burst size; default attack.num_malicious"
    )
    population: int = Field(
        25,
        ge=0,
        description="hypergeometric: malicious clients among federation.num_clients (LeadFL's "
        "template: 25 of 100)",
    )
    forced_rounds: list[int] = Field(
        default_factory=list,
        description="rounds (1-based) with forced_attackers attackers whatever the draw "
        "(LeadFL forces its 0-based rounds 0, 10, 12: [1, 11, 13])",
    )
    forced_attackers: int | None = Field(
        None, ge=1, description="attackers in a forced round; default attack.num_malicious"
    )
    start: int = Field(1, ge=1, description="no drawn attack before this round")
    end: int | None = Field(None, ge=1, description="no drawn attack after this round")

    @field_validator("counts")
    @classmethod
    def _non_negative(cls, counts: list[int]) -> list[int]:
        if min(counts, default=0) < 0:
            raise ValueError("attacker counts must be non-negative")
        return counts


@register_schedule("bursty")
class Bursty(Schedule[BurstyOptions]):
    """Each round's number of attackers drawn from a wide distribution (LeadFL's evaluation)."""

    Options = BurstyOptions

    def __init__(self, cfg: ExperimentConfig, options: BurstyOptions | None = None) -> None:
        super().__init__(cfg, options)
        opts = self.options
        n_mal, total = cfg.attack.num_malicious, cfg.federation.rounds
        self.max = opts.max if opts.max is not None else n_mal
        self.forced = opts.forced_attackers if opts.forced_attackers is not None else n_mal
        self.end = opts.end if opts.end is not None else total
        k, n = cfg.federation.clients_per_round, cfg.federation.num_clients
        most = {
            "choice": max(opts.counts),
            "burst": self.max,
            "hypergeometric": min(opts.population, k),
        }[opts.distribution]
        if opts.distribution == "burst" and opts.min > self.max:
            _fail(f"min ({opts.min}) must be at most max ({self.max})")
        if opts.distribution == "hypergeometric" and opts.population > n:
            _fail(f"population ({opts.population}) must be at most federation.num_clients ({n})")
        if most > n_mal:
            _fail(
                f"distribution {opts.distribution} can put {most} attackers in a round; "
                f"attack.num_malicious is {n_mal}"
            )
        if self.forced > n_mal:
            _fail(
                f"forced_attackers ({self.forced}) must be at most attack.num_malicious ({n_mal})"
            )
        bad = [r for r in opts.forced_rounds if not 1 <= r <= total]
        if bad:
            _fail(f"forced_rounds {bad} outside 1..federation.rounds ({total})")
        if opts.start > self.end:
            _fail(f"start ({opts.start}) must be at most end ({self.end})")

    def attackers(self, t: int) -> int:
        o = self.options
        if t in o.forced_rounds:
            return self.forced
        if not o.start <= t <= self.end:
            return 0
        rng = numpy_rng(self.cfg.seed, "bursty", t)
        if o.distribution == "choice":
            return int(o.counts[int(rng.integers(len(o.counts)))])
        if o.distribution == "burst":
            return int(rng.integers(o.min, self.max + 1)) if rng.random() < o.prob else 0
        fed = self.cfg.federation
        return int(
            rng.hypergeometric(o.population, fed.num_clients - o.population, fed.clients_per_round)
        )


def _fail(msg: str) -> None:
    raise FlwbcError(f"attack schedule 'bursty': {msg}")

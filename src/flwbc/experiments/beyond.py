"""results/beyond/BEYOND.md: claims of the client-side defenses' papers tested beyond the
papers' own settings, each quoted with its source, measured over seeds with an interval, and
given a verdict by a rule stated here; generated from the run store of the bench specs in
`results/beyond/` (`flwbc beyond`), like REPORT.md from the paper's specs.

Verdicts compare two defenses cell by cell with the paired difference over seeds (the same seed
shares the warm model, the clients and the attackers): its mean and 95% Student-t interval
(`bench.t_interval`). A claim that one defense is not worse than another is read as a
non-inferiority test with margin `MARGIN`: *refuted here* when the whole interval lies beyond
the margin on the worse side, *holds here* when its worse end lies within the margin (or on the
better side), and *open* otherwise, or with fewer than two seeds (a probe). Each end of a 95%
two-sided interval is a 97.5% one-sided bound; the many cells of a table are not corrected for
multiplicity; persistence is censored at the budget, so its means are lower bounds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flwbc.errors import FlwbcError
from flwbc.evaluation.trigger import trigger_field
from flwbc.experiments.bench import (
    BenchCell,
    BenchSpec,
    collect_bench,
    expand_bench,
    t_interval,
)
from flwbc.runio import read_jsonl

MARGIN = 0.05
"""Differences of success (a share) within ±5 points count as no difference."""

FINDINGS = "findings.md"
"""The hand-written findings beside the specs, appended to BEYOND.md as they are."""

SPECS = (
    "composition",
    "adaptive",
    "adaptive-leadfl",
    "lockdown",
    "leadfl-template",
    "leadfl-template-paper",
    "leadfl-template-e10",
)
"""The specs of results/beyond/ the report reads, in its order."""


@dataclass(frozen=True)
class Claim:
    """A claim as its source states it."""

    quote: str
    source: str


COMPLEMENTARY = Claim(
    "By applying both CMA and FL-WBC, the attack effect is mitigated within 1 communication "
    "rounds under IID settings and within 5 communication rounds under non-IID settings. Thus, "
    "our defense is complementary to the server-based robustness aggregations",
    "FL-WBC (Sun et al., NeurIPS 2021), §7.4",
)
LOCKDOWN = Claim(
    "Empirical results show that Lockdown achieves superior and consistent defense performance "
    "compared to existing representative approaches against backdoor attacks.",
    "Lockdown (Huang et al., NeurIPS 2023), abstract",
)
ADAPTIVE = Claim(
    "Our defense is robust against adaptive attacks [25, 26] since the attacker cannot know the "
    "detailed defensive operations even after conducting the attack",
    "FL-WBC (Sun et al., NeurIPS 2021), §5.2",
)
BURSTY = Claim(
    "LeadFL frequently reduces the backdoor accuracy from more than 75% for state-of-the-art "
    "defenses to less than 10% while its impact on the main task accuracy is always less than "
    "for other client-side defenses",
    "LeadFL (Zhu, Roos & Chen, ICML 2023), abstract (the repository's README); its template "
    "configs/template.yaml",
)


@dataclass(frozen=True)
class Paired:
    """b − a over the seeds both have: mean, 95% half-width (None with one seed), seeds."""

    mean: float
    half_width: float | None
    seeds: int

    def text(self) -> str:
        if self.half_width is None:
            return f"{self.mean:+.3f} (1 seed: a probe)"
        return f"{self.mean:+.3f} ± {self.half_width:.3f} ({self.seeds} seeds)"


def paired_of(diffs: list[float]) -> Paired | None:
    """Per-seed differences as a `Paired` (None without any)."""
    if not diffs:
        return None
    mean, half = t_interval(diffs)
    return Paired(mean, half, len(diffs))


def paired(
    cells: list[BenchCell], a: str, b: str, field: str = "effect", across: str = "defense"
) -> Paired | None:
    """The paired difference of `field` between cells b and a over the cells' seeds: b and a
    name defenses (the cells of one regime, setting and attack) or, with `across="attack"`,
    attacks (the cells of one defense)."""
    by = {(getattr(c, across), c.seed): getattr(c, field) for c in cells}
    return paired_of(
        [
            by[(b, s)] - by[(a, s)]
            for s in sorted({c.seed for c in cells})
            if by.get((a, s)) is not None and by.get((b, s)) is not None
        ]
    )


def verdict_not_worse(d: Paired | None, lower_is_better: bool = True) -> str:
    """The verdict on "b is not worse than a" from b − a (`MARGIN`, module docstring)."""
    if d is None:
        return "not measured"
    if d.half_width is None:
        return "open (one seed)"
    lo, hi = d.mean - d.half_width, d.mean + d.half_width
    worse_lo, worse_hi = (lo, hi) if lower_is_better else (-hi, -lo)
    if worse_lo > MARGIN:
        return "refuted here"
    if worse_hi <= MARGIN:
        return "holds here"
    return "open"


def mean_ci(values: list[float]) -> str:
    """mean ± 95% half-width (n), or the one value as a probe."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "–"
    mean, half = t_interval(vals)
    if half is None:
        return f"{mean:.3f} (1 seed)"
    return f"{mean:.3f} ± {half:.3f} ({len(vals)})"


def load_spec(path: Path) -> BenchSpec:
    try:
        return BenchSpec.model_validate(yaml.safe_load(path.read_text()))
    except (OSError, ValueError) as e:
        raise FlwbcError(f"{path}: {e}") from None


def spec_cells(spec: BenchSpec, store: Path) -> list[BenchCell]:
    """Every branch cell of `spec` measured from `store` (unfinished runs: empty cells)."""
    return collect_bench(spec, expand_bench(spec), store)


def _select(cells: list[BenchCell], **where: str) -> list[BenchCell]:
    return [c for c in cells if all(getattr(c, k) == v for k, v in where.items())]


def _command(command: str) -> list[str]:
    return ["", f"Command: `{command}`", ""]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def composition_section(spec: BenchSpec, cells: list[BenchCell], command: str) -> list[str]:
    """§7.4's claim per setting and attack: FL-WBC + median against the median alone, and the
    compositions designed to keep both benefits against their rule alone."""
    pairs = [
        ("median", "FL-WBC + median"),
        ("bucketing + median", "FL-WBC + bucketing + median"),
        ("NNM + median", "FL-WBC + NNM + median"),
        ("trimmed mean", "FL-WBC + trimmed mean"),
        ("norm floor + median", "FL-WBC + norm floor + median"),
        ("median", "FL-WBC + norm floor + median"),
        ("FedAvg", "FL-WBC"),
    ]
    lines = [
        "## FL-WBC composed with robust rules",
        "",
        f"> {COMPLEMENTARY.quote}",
        f"> — {COMPLEMENTARY.source}",
        "",
        f"Spec `results/beyond/{spec.id}.yaml`: {spec.title}. Seeds {spec.seeds}. The measure of a "
        "targeted attack is its effect: its success over the rounds of its window minus the "
        "clean baseline's (backdoor success for BadNets, D_M's misclassification confidence "
        "for eq. 3), lower is better; of label flipping, the test accuracy at the budget, "
        "higher is better. Each row: a defense without FL-WBC and one with it (s = 0.4; the "
        "same rule, or the norm floor's composition against the median alone), their values "
        "and the paired difference (with − without) with its 95% interval; the verdict reads "
        "the claim as 'adding FL-WBC is not worse'. In §7.4's own setting the median alone "
        "fails (one emulated, boosted attacker); in this one (2 of 10 attackers, each "
        "training) the median alone stops both attacks, so the question is whether FL-WBC "
        "keeps that.",
        "",
    ]
    rows = []
    for regime_name, regime in spec.regimes.items():
        targeted = regime.kind == "targeted"
        field = "effect" if targeted else "acc"
        for setting in spec.all_settings():
            for attack in regime.attacks:  # type: ignore[union-attr]
                sub = _select(cells, regime=regime_name, setting=setting, attack=attack)
                for a, b in pairs:
                    d = paired(sub, a, b, field)
                    rows.append(
                        [
                            setting,
                            attack,
                            "effect" if targeted else "accuracy",
                            a,
                            b,
                            mean_ci([getattr(c, field) for c in _select(sub, defense=a)]),
                            mean_ci([getattr(c, field) for c in _select(sub, defense=b)]),
                            d.text() if d else "–",
                            verdict_not_worse(d, lower_is_better=targeted),
                        ]
                    )
    header = [
        "setting",
        "attack",
        "measure",
        "without FL-WBC",
        "with FL-WBC",
        "without",
        "with",
        "difference",
        "verdict",
    ]
    lines += _table(header, rows) + _command(command)
    return lines


ORDER_KEYS = (
    ("attacker_in_middle", "an attacker's value is the median's"),
    ("attacker_in_middle_null", "the same if exchangeable"),
    ("attacker_quantile_mean", "attackers' mean quantile among benign"),
    ("attacker_z_median", "|attacker − benign median| / benign sd"),
    ("median_shift_z_median", "|median shift| / benign sd"),
    ("benign_spread_median", "benign sd"),
)


def mechanism_section(cells: list[BenchCell], store: Path, command: str) -> list[str]:
    """The order statistics observed on the median's runs with and without FL-WBC (the
    `order_stats.json` that `flwbc order-stats` writes into a run directory)."""
    rows = []
    for setting, attack in sorted({(c.setting, c.attack) for c in cells if c.kind == "targeted"}):
        for defense in ("median", "FL-WBC + median"):
            runs = [
                c.run
                for c in _select(cells, setting=setting, attack=attack, defense=defense)
                if c.run
            ]
            found = [store / r / "order_stats.json" for r in runs]
            got = [json.loads(p.read_text()) for p in found if p.exists()]
            if not got:
                continue
            rows.append(
                [setting, attack, defense]
                + [mean_ci([g.get(k) for g in got]) for k, _ in ORDER_KEYS]
            )
    lines = [
        "## The mechanism: where the attackers' values fall",
        "",
        "Observed, not inferred: each run replayed along its own trajectory over its attack "
        "window, 1,000 coordinates sampled per round; statistics averaged over the rounds with "
        "attackers, then over seeds (mean ± 95% interval, seeds in brackets). In the figure, "
        "an attacker value's quantile among the 8 benign values of its coordinate takes the "
        "values k/8 (ties counting half), so some tenths hold none.",
        "",
    ]
    if not rows:
        return lines + ["Not measured yet (no `order_stats.json` in the store).", ""]
    lines += _table(["setting", "attack", "defense"] + [t for _, t in ORDER_KEYS], rows)
    lines += ["", f"![The attackers' quantiles]({QUANTILE_FIGURE}.png)"] + _command(command)
    return lines


ADAPTIVE_PAIRS = (
    ("BadNets", "wbc_aware eot"),
    ("BadNets", "wbc_aware offmask"),
    ("eq. 3, 10 epochs", "eq. 3, 10 epochs, λ = 0.001"),
    ("eq. 3, 10 epochs", "eq. 3, 10 epochs, λ = 0.003"),
    ("eq. 3, 10 epochs", "eq. 3, 10 epochs, λ = 0.01"),
    ("eq. 3, 10 epochs", "eq. 3, 10 epochs, λ = 0.1"),
    ("eq. 3, 10 epochs", "eq. 3, 10 epochs, λ = 1"),
)
"""(non-adaptive counterpart, adaptive attack) in the adaptive spec."""

LEADFL_PAIRS = (
    ("BadNets", "kernel backdoor, λ = 0.01"),
    ("BadNets", "kernel backdoor, λ = 0.1"),
)
"""The same for the attacker that knows LeadFL (adaptive-leadfl spec)."""


def adaptive_section(
    spec: BenchSpec,
    cells: list[BenchCell],
    command: str,
    pairs: tuple[tuple[str, str], ...],
    heading: str,
    claim: Claim | None,
    undefended: str = "FedAvg",
) -> list[str]:
    """Each adaptive attack against its non-adaptive counterpart, per defense (`pairs`), read
    against `claim` (None: the defense's paper states none about adaptive attackers)."""
    rows = []
    for setting in spec.all_settings():
        for defense in spec.defenses:
            every = _select(cells, regime="targeted", setting=setting, defense=defense)
            sub = [c for c in every if not c.diverged]
            for a, b in pairs:
                d = paired(sub, a, b, across="attack")
                pa = _select(sub, attack=a)
                pb = _select(sub, attack=b)
                lost = [c for c in _select(every, attack=b) if c.diverged and c.run]
                rows.append(
                    [
                        setting,
                        defense,
                        b,
                        str(len(lost)),
                        mean_ci([c.effect for c in pa]),
                        mean_ci([c.effect for c in pb]),
                        d.text() if d else "–",
                        mean_ci([c.persists for c in pa]),  # type: ignore[misc]
                        mean_ci([c.persists for c in pb]),  # type: ignore[misc]
                        mean_ci([c.acc for c in pb]),
                        verdict_not_worse(d) if defense != undefended else "(undefended)",
                    ]
                )
    quoted = (
        [f"> {claim.quote}", f"> — {claim.source}"]
        if claim is not None
        else ["The defense's paper evaluates no attacker that knows it; measured as the others."]
    )
    lines = [
        f"## {heading}",
        "",
        *quoted,
        "",
        f"Spec `results/beyond/{spec.id}.yaml`: {spec.title}. Seeds {spec.seeds}. Each row: an "
        "adaptive attack beside its non-adaptive counterpart under one defense: their effects "
        "(success over the clean baseline in the window), the paired difference (adaptive − "
        "counterpart), the rounds the success persists after the window (censored at the "
        "budget) and the accuracy at the window's end under the adaptive attack. Runs whose "
        "training diverged (`diverged`: the attack destroyed the model, an untargeted "
        "outcome) are counted and left out of every other column. The verdict reads the "
        "claim as 'the defense is not worse off against the adaptive attack'.",
        "",
    ]
    header = [
        "setting",
        "defense",
        "adaptive attack",
        "diverged (adaptive)",
        "counterpart effect",
        "adaptive effect",
        "difference",
        "counterpart persists",
        "adaptive persists",
        "accuracy",
        "verdict",
    ]
    lines += _table(header, rows) + _command(command)
    return lines


QUANTILE_FIGURE = "order-stats"
"""The mechanism's figure, beside BEYOND.md (PNG and SVG)."""


def quantile_hists(cells: list[BenchCell], store: Path) -> dict[tuple[str, str, str], list[float]]:
    """Per (setting, attack, defense) of the median and FL-WBC + median: the share of attacker
    values in each tenth of the benign values' range of quantiles, averaged over the replayed
    rounds with attackers and the seeds (`order_stats.jsonl`)."""
    out: dict[tuple[str, str, str], list[float]] = {}
    for c in cells:
        if c.kind != "targeted" or c.defense not in ("median", "FL-WBC + median") or not c.run:
            continue
        path = store / c.run / "order_stats.jsonl"
        if not path.exists():
            continue
        hists = [r["attacker_quantile_hist"] for r in read_jsonl(path) if r.get("attackers")]
        if hists:
            out.setdefault((c.setting, c.attack, c.defense), []).extend(
                [sum(col) / len(hists) for col in zip(*hists, strict=True)]
            )
    return {key: [sum(v[i::10]) / (len(v) // 10) for i in range(10)] for key, v in out.items()}


def plot_quantiles(hists: dict[tuple[str, str, str], list[float]], prefix: Path) -> list[Path]:
    """One panel per setting and attack: the attackers' quantiles among the benign values of
    their coordinate, with and without FL-WBC (bars: share of attacker values per tenth)."""
    from flwbc.plots import _finish, _pyplot

    plt = _pyplot()
    panels = sorted({(s, a) for s, a, _ in hists})
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.4 * len(panels), 2.8), squeeze=False, sharey=True
    )
    centres = [(i + 0.5) / 10 for i in range(10)]
    for ax, (setting, attack) in zip(axes[0], panels, strict=True):
        for shift, defense, colour in (
            (-0.022, "median", "#4477aa"),
            (0.022, "FL-WBC + median", "#cc6677"),
        ):
            h = hists.get((setting, attack, defense))
            if h is not None:
                ax.bar([c + shift for c in centres], h, width=0.044, color=colour, label=defense)
        ax.set_title(f"{attack}, {setting}", fontsize=9)
        ax.set_xlabel("attacker's quantile among benign values")
        ax.set_xlim(0, 1)
    axes[0][0].set_ylabel("share of attacker values")
    axes[0][0].legend(fontsize=8)
    return _finish(plt, fig, prefix, "Where the attackers' values fall (attack window, 3 seeds)")


def _window_mean(recs: list[dict[str, Any]], key: str, start: int, end: int) -> float | None:
    vals = [r[key] for r in recs if start <= r["round"] <= end and r.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


def _last(recs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in recs if r.get(key) is not None]
    return vals[-1] if vals else None


def lockdown_section(
    spec: BenchSpec, cells: list[BenchCell], store: Path, command: str
) -> list[str]:
    """Lockdown's deployed (consensus-fused) model and its raw global model against BadNets,
    beside FedAvg and the median, from scratch."""
    regime = spec.regimes["targeted"]
    start, end = regime.window or (1, regime.rounds)
    measures: list[tuple[str, Callable[[list[dict[str, Any]]], float | None]]] = [
        ("accuracy", lambda r: _last(r, "test_acc")),
        ("backdoor, window", lambda r: _window_mean(r, "backdoor_acc", start, end)),
        ("deployed accuracy", lambda r: _last(r, "cf_acc")),
        ("deployed backdoor, window", lambda r: _window_mean(r, "cf_backdoor_acc", start, end)),
    ]
    rows = []
    per_seed: dict[tuple[str, str, int], dict[str, float | None]] = {}
    for setting in spec.all_settings():
        for defense in spec.defenses:
            sub = [
                c
                for c in _select(cells, setting=setting, defense=defense, kind="targeted")
                if c.run
            ]
            for c in sub:
                recs = read_jsonl(store / str(c.run) / "rounds.jsonl")
                per_seed[(setting, defense, c.seed)] = {m: f(recs) for m, f in measures}
            values = [per_seed[(setting, defense, c.seed)] for c in sub]
            rows.append([setting, defense] + [mean_ci([v[m] for v in values]) for m, _ in measures])
    # what each defense deploys: Lockdown its fused model, the others their global model
    deployed = {"Lockdown": "deployed ", "Lockdown + median": "deployed "}
    verdicts = []
    for setting in spec.all_settings():
        for rival in ("median", "FedAvg"):
            for measure, lower in (("backdoor, window", True), ("accuracy", False)):
                diffs = []
                for seed in spec.seeds:
                    mine = per_seed.get((setting, "Lockdown", seed), {})
                    theirs = per_seed.get((setting, rival, seed), {})
                    a = mine.get(deployed["Lockdown"] + measure)
                    b = theirs.get(measure)
                    if a is not None and b is not None:
                        diffs.append(a - b)
                d = paired_of(diffs)
                claim = verdict_not_worse(d, lower_is_better=lower)
                verdicts.append([setting, rival, measure, d.text() if d else "–", claim])
    lines = [
        "## Lockdown",
        "",
        f"> {LOCKDOWN.quote}",
        f"> — {LOCKDOWN.source}",
        "",
        f"Spec `results/beyond/{spec.id}.yaml`: {spec.title}. Seeds {spec.seeds}; BadNets in "
        f"rounds {start}-{end} of {regime.rounds}. For Lockdown the deployed model is the "
        "consensus-fused one; for the others the deployed model is the global model itself "
        "(their 'deployed' columns are empty). Accuracy at the last round; backdoor success "
        "(absolute, not over a baseline) averaged over the window.",
        "",
    ]
    lines += _table(["setting", "defense"] + [m for m, _ in measures], rows)
    lines += [
        "",
        "Lockdown's deployed model against another defense's global model, seed by seed "
        "(Lockdown − other); the verdict reads the claim as 'Lockdown is not worse'.",
        "",
    ]
    header = ["setting", "against", "measure", "difference", "verdict"]
    return lines + _table(header, verdicts) + _command(command)


def verdict_threshold(values: list[float], threshold: float, above: bool) -> str:
    """The verdict on "the value is above (below) `threshold`" from its 95% interval over
    seeds: *holds here* when the whole interval lies on the claimed side, *refuted here* when
    it lies wholly on the other, *open* otherwise or with one seed."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "not measured"
    mean, half = t_interval(vals)
    if half is None:
        return "open (one seed)"
    lo, hi = mean - half, mean + half
    if not above:
        lo, hi, threshold = -hi, -lo, -threshold
    return "holds here" if lo > threshold else "refuted here" if hi < threshold else "open"


BURSTY_MEASURES: tuple[tuple[str, str, str], ...] = (
    ("backdoor, mean of rounds", "backdoor_acc", "mean"),
    ("backdoor, last round", "backdoor_acc", "last"),
    ("accuracy, last round", "test_acc", "last"),
)
"""(column, record field, over rounds): LeadFL's summary numbers (its federator's
`backdoor_accuracy_avg`, the mean over every round, and `backdoor_accuracy_final`) and the
main task's accuracy at the budget."""


def _bursty_values(
    spec: BenchSpec, cells: list[BenchCell], store: Path
) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Per (defense, kind, seed) of the finished runs: each `BURSTY_MEASURES` value and the
    per-round records. A clean run's backdoor accuracy is its `trigger` metric's field for
    the spec's backdoor (the same images, the attackers sending honest updates)."""
    (attack,) = spec.regimes["targeted"].attacks.values()  # type: ignore[union-attr]
    clean_field = trigger_field(attack["attack"]["name"])
    out: dict[tuple[str, str, int], dict[str, Any]] = {}
    for c in cells:
        if not c.run:
            continue
        recs = read_jsonl(store / str(c.run) / "rounds.jsonl")
        got: dict[str, Any] = {"records": recs}
        for column, key, over in BURSTY_MEASURES:
            if c.kind == "clean" and key == "backdoor_acc":
                key = clean_field
            got[column] = (
                _window_mean(recs, key, 1, recs[-1]["round"])
                if over == "mean"
                else _last(recs, key)
            )
        out[(c.defense, c.kind, c.seed)] = got
    return out


BURSTY_FIGURE = "bursty"
"""The template's figure, beside BEYOND.md (PNG and SVG)."""


def plot_bursty(values: dict[tuple[str, str, int], dict[str, Any]], prefix: Path) -> list[Path]:
    """Backdoor accuracy and main accuracy over rounds per defense under the bursty attack:
    the mean over seeds (line) and the seeds' range (band)."""
    from flwbc.plots import _finish, _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.2), squeeze=False)
    defenses = sorted({d for d, k, _ in values if k == "targeted"})
    colours = ("#4477aa", "#cc6677", "#228833", "#ccbb44", "#66ccee", "#aa3377")
    for ax, key, label in zip(
        axes[0],
        ("backdoor_acc", "test_acc"),
        ("backdoor accuracy (all test images)", "main-task accuracy"),
        strict=True,
    ):
        for i, defense in enumerate(defenses):
            runs = [
                v["records"] for (d, k, _), v in values.items() if d == defense and k == "targeted"
            ]
            rounds = sorted({r["round"] for recs in runs for r in recs})
            series = [
                [r[key] for recs in runs for r in recs if r["round"] == t and key in r]
                for t in rounds
            ]
            kept = [(t, s) for t, s in zip(rounds, series, strict=True) if s]
            if not kept:
                continue
            xs = [t for t, _ in kept]
            colour = colours[i % len(colours)]
            ax.plot(xs, [sum(s) / len(s) for _, s in kept], color=colour, label=defense, lw=1.2)
            ax.fill_between(
                xs, [min(s) for _, s in kept], [max(s) for _, s in kept], color=colour, alpha=0.2
            )
        ax.set_xlabel("round")
        ax.set_ylabel(label)
        ax.set_ylim(0, 1)
    axes[0][0].legend(fontsize=8)
    return _finish(
        plt, fig, prefix, "LeadFL's template under bursty attackers (mean, seeds' range)"
    )


def bursty_section(
    spec: BenchSpec,
    cells: list[BenchCell],
    store: Path,
    command: str,
    probes: Sequence[tuple[BenchSpec, list[BenchCell], str]] = (),
) -> list[str]:
    """LeadFL's headline claim on its template: each defense's backdoor and main accuracy
    under the bursty attack and on the clean cell, the claim's two thresholds, LeadFL against
    Bulyan alone and against FL-WBC; then each of `probes` (spec, cells, command), one-seed
    variants of the template (LeadFL's paper form, the template's 10 local epochs), run by
    run."""
    regime = spec.regimes["targeted"]
    values = _bursty_values(spec, cells, store)
    columns = [m for m, _, _ in BURSTY_MEASURES]

    def of(defense: str, kind: str, column: str) -> list[float]:
        return [v[column] for (d, k, _), v in sorted(values.items()) if d == defense and k == kind]

    rows = [
        [defense]
        + [mean_ci(of(defense, "targeted", m)) for m in columns]
        + [mean_ci(of(defense, "clean", m)) for m in columns[0:1] + columns[2:]]
        for defense in spec.defenses
    ]

    def diff(a: str, b: str, column: str) -> Paired | None:
        by = {(d, s): v[column] for (d, k, s), v in values.items() if k == "targeted"}
        return paired_of(
            [
                by[(b, s)] - by[(a, s)]
                for s in spec.seeds
                if by.get((a, s)) is not None and by.get((b, s)) is not None
            ]
        )

    mean_col, acc_col = columns[0], columns[2]
    checks = [
        [
            "Bulyan alone lets it through: above 0.75",
            mean_ci(of("Bulyan", "targeted", mean_col)),
            verdict_threshold(of("Bulyan", "targeted", mean_col), 0.75, above=True),
        ],
        [
            "Bulyan + LeadFL keeps it below 0.10",
            mean_ci(of("Bulyan + LeadFL", "targeted", mean_col)),
            verdict_threshold(of("Bulyan + LeadFL", "targeted", mean_col), 0.10, above=False),
        ],
    ]
    pairs = [
        ("Bulyan", "Bulyan + LeadFL", mean_col, True),
        ("Bulyan", "Bulyan + FL-WBC", mean_col, True),
        ("Bulyan + FL-WBC", "Bulyan + LeadFL", mean_col, True),
        ("Bulyan + FL-WBC", "Bulyan + LeadFL", acc_col, False),
        ("FedAvg", "Bulyan", mean_col, True),
    ]
    paired_rows = []
    for a, b, column, lower in pairs:
        d = diff(a, b, column)
        paired_rows.append([b, a, column, d.text() if d else "–", verdict_not_worse(d, lower)])
    lines = [
        "## LeadFL under bursty attackers, on its template",
        "",
        f"> {BURSTY.quote}",
        f"> — {BURSTY.source}",
        "",
        f"Spec `results/beyond/{spec.id}.yaml`: {spec.title}. Seeds {spec.seeds}; the attack in "
        f"every round of {regime.rounds}. Backdoor accuracy is LeadFL's: every test image "
        "triggered, the target class's included, so a model that never learnt the backdoor "
        "still scores about 0.10 (the clean cell's column). The claim's numbers are read as the "
        "mean over rounds (LeadFL's `backdoor_accuracy_avg`); the paper's own table was not "
        "available here, so its values for this template are not compared.",
        "",
    ]
    lines += _table(["defense", *columns, "clean: " + mean_col, "clean: " + acc_col], rows)
    lines += [
        "",
        "The claim's two thresholds, on the mean over rounds (verdict from the 95% interval "
        "over seeds):",
        "",
    ]
    lines += _table(["claim", "measured", "verdict"], checks)
    lines += [
        "",
        "Paired differences over seeds (the defense − the one it is compared with); the "
        "verdict reads 'the defense is not worse' (backdoor: lower is better; accuracy: "
        "higher).",
        "",
    ]
    lines += _table(["defense", "against", "measure", "difference", "verdict"], paired_rows)
    lines += _command(command)
    for pspec, pcells, pcommand in probes:
        pvalues = _bursty_values(pspec, pcells, store)
        prow = [
            [d, k, str(seed)] + [f"{v[m]:.3f}" if v[m] is not None else "–" for m in columns]
            for (d, k, seed), v in sorted(pvalues.items())
        ]
        lines += [
            f"Spec `results/beyond/{pspec.id}.yaml`: {pspec.title}. Seeds {pspec.seeds}, one "
            "row per run (a probe):",
            "",
        ]
        lines += _table(["defense", "cell", "seed", *columns], prow) + _command(pcommand)
    return lines


def beyond_markdown(specs_dir: Path, store: Path) -> str:
    """BEYOND.md from the specs in `specs_dir` and the runs in `store`."""
    specs = {name: load_spec(specs_dir / f"{name}.yaml") for name in SPECS}
    cells = {name: spec_cells(spec, store) for name, spec in specs.items()}
    finished = {name: [c for c in cs if c.run] for name, cs in cells.items()}
    seconds = sum(c.seconds or 0.0 for cs in finished.values() for c in cs)

    def bench(name: str) -> str:
        return f"flwbc bench run results/beyond/{name}.yaml --runs RUNS --out results/beyond/{name}"

    lines = [
        "# Beyond the papers: client-side defenses tested",
        "",
        "Generated by `flwbc beyond RUNS` from the run store of the specs in results/beyond/; "
        "its last section, written by hand, is results/beyond/findings.md. A verdict compares "
        "two defenses cell by cell by their paired difference over seeds and its 95% interval, "
        f"as a non-inferiority test with margin {MARGIN:.2f}: *refuted here* when the whole "
        "interval lies beyond the margin on the worse side, *holds here* when its worse end "
        "lies within the margin or on the better side, *open* otherwise or with one seed. "
        "Cells are not corrected for multiplicity; persistence is censored at the budget.",
        "",
        f"Runs finished: {', '.join(f'{n} {len(finished[n])} of {len(cells[n])}' for n in SPECS)}; "
        f"their compute: {seconds / 3600:.1f} h (each run's own training and evaluation, "
        "`timings.jsonl`, on the machine that ran it).",
        "",
    ]
    lines += composition_section(specs["composition"], cells["composition"], bench("composition"))
    lines += mechanism_section(
        cells["composition"],
        store,
        "flwbc order-stats --rounds 10 RUN_DIR ... (the median's and FL-WBC + median's runs)",
    )
    lines += adaptive_section(
        specs["adaptive"],
        cells["adaptive"],
        bench("adaptive"),
        ADAPTIVE_PAIRS,
        "Attackers that know FL-WBC",
        ADAPTIVE,
    )
    lines += adaptive_section(
        specs["adaptive-leadfl"],
        cells["adaptive-leadfl"],
        bench("adaptive-leadfl"),
        LEADFL_PAIRS,
        "An attacker that knows LeadFL",
        None,
    )
    lines += lockdown_section(specs["lockdown"], cells["lockdown"], store, bench("lockdown"))
    lines += bursty_section(
        specs["leadfl-template"],
        cells["leadfl-template"],
        store,
        bench("leadfl-template"),
        [(specs[n], cells[n], bench(n)) for n in ("leadfl-template-paper", "leadfl-template-e10")],
    )
    findings = specs_dir / FINDINGS
    if findings.exists():
        lines += ["## Findings (written by hand)", "", findings.read_text().strip(), ""]
    return "\n".join(lines)


def write_beyond(specs_dir: Path, store: Path, out: Path) -> list[Path]:
    """Write BEYOND.md to `out` and, once order statistics exist, the mechanism's figure
    beside it; the paths written."""
    from flwbc.runio import atomic_write_bytes

    written: list[Path] = []
    cells = spec_cells(load_spec(specs_dir / "composition.yaml"), store)
    hists = quantile_hists(cells, store)
    if hists:
        written += plot_quantiles(hists, out.parent / QUANTILE_FIGURE)
    template = load_spec(specs_dir / "leadfl-template.yaml")
    bursty = _bursty_values(template, spec_cells(template, store), store)
    if any(k == "targeted" for _, k, _ in bursty):
        written += plot_bursty(bursty, out.parent / BURSTY_FIGURE)
    atomic_write_bytes(out, (beyond_markdown(specs_dir, store) + "\n").encode())
    return [out, *written]

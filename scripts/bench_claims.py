"""The literature's claims about how defenses rank (results/leaderboard/literature.md, "Claims
our board can test"), each checked against a leaderboard's summary.csv.

Every check is a comparison of the board's own numbers (no threshold tuned to a claim): an
ordering of means, with "within the intervals" added to a pairwise comparison where the two
95% intervals overlap, so that an ordering the seeds cannot separate is not read as a verdict;
checks that count attacks or defenses count orderings of means. Two checks use a fixed line,
stated in their row: a collapse is an accuracy within 5 points of chance, a backdoor evades a
defense when its success over baseline is above zero beyond its interval. A cell of one seed
is a probe; its interval, where it has one, is its defense's pooled one (docs/bench.md).
Claims whose setting the board does not have (bucketing before Krum, client momentum off) are
listed as not measured, with the nearest numbers the board has. The attacks a worst case is
taken over are those the board holds in any setting; a setting missing one of them is named
as not finished.

usage: python scripts/bench_claims.py OUT_DIR > results/leaderboard/claims.md
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flwbc.experiments.bench import intervals_overlap, severity, tie_safe

CLEAN = "none"
IID, A05, A01 = "iid/20%", "α=0.5/20%", "α=0.1/20%"
A05_30 = "α=0.5/30%"
CLASSICAL = [
    "median", "trimmed mean", "geometric median", "centered clipping", "Krum", "Multi-Krum",
    "Bulyan (f=1)",
]  # fmt: skip
BACKDOORS = ["BadNets", "DBA", "model replacement", "Neurotoxin"]
CHANCE = 0.10
COLLAPSE = CHANCE + 0.05
"""Accuracy counted as a collapse: within 5 points of chance (10 classes)."""


@dataclass
class Cell:
    mean: float
    half: float | None
    seeds: int
    persists: float | None

    def __str__(self) -> str:
        pm = f" ± {100 * self.half:.1f}" if self.half is not None else ""
        return f"{100 * self.mean:.1f}{pm}"


class Board:
    """summary.csv keyed by (regime, setting, attack, defense)."""

    def __init__(self, path: Path) -> None:
        self.cells: dict[tuple[str, str, str, str], Cell] = {}
        self.kinds: dict[str, str] = {}  # regime -> its kind, from its measure
        for r in csv.DictReader(path.open(encoding="utf-8")):
            if r.get("measure") == "effect" or r["regime"] not in self.kinds:
                targeted = r.get("measure", r["regime"]) in ("effect", "targeted")
                self.kinds[r["regime"]] = "targeted" if targeted else "untargeted"
            self.cells[(r["regime"], r["setting"], r["attack"], r["defense"])] = Cell(
                tie_safe(float(r["mean"])),
                float(r["half_width"]) if r["half_width"] else None,
                int(r["seeds"]),
                float(r["persists"]) if r["persists"] else None,
            )

    def get(self, setting: str, attack: str, defense: str, regime: str = "untargeted") -> Cell:
        cell = self.cells.get((regime, setting, attack, defense))
        if cell is None:
            raise Missing(f"{regime} {setting} {attack} {defense}")
        return cell

    def attacks(self, regime: str = "untargeted") -> list[str]:
        return sorted({a for (r, _, a, _) in self.cells if r == regime and a != CLEAN})

    def settings(self, regime: str = "untargeted") -> list[str]:
        return sorted({s for (r, s, _, _) in self.cells if r == regime})

    def worst(
        self, setting: str, defense: str, regime: str = "untargeted", among: list[str] | None = None
    ) -> tuple[str, Cell]:
        """The attack with the lowest accuracy (untargeted) or highest effect (targeted), ties
        as on the board (`severity`); every attack of the regime must be finished, or the worst
        case is not known."""
        names = among or self.attacks(regime)
        got = [(a, self.get(setting, a, defense, regime)) for a in names]
        return max(got, key=lambda p: severity(p[1].mean, p[1].seeds, self.kinds[regime]))

    def drop(self, setting: str, attack: str, defense: str) -> float:
        return tie_safe(
            self.get(setting, CLEAN, defense).mean - self.get(setting, attack, defense).mean
        )


class Missing(Exception):
    """A cell the check needs is not finished."""


def overlap(a: Cell, b: Cell) -> bool | None:
    """Whether a's and b's intervals overlap (None if either has none)."""
    return intervals_overlap(a.mean, a.half, b.mean, b.half)


def below(a: Cell, b: Cell) -> str:
    """A note on comparing a with b: '' if their intervals are disjoint."""
    got = overlap(a, b)
    return " (no interval)" if got is None else " (within the intervals)" if got else ""


def verdict(holds: int, of: int) -> str:
    if of == 0:
        return "not measured"
    return (
        "holds" if holds == of else "does not hold" if holds == 0 else f"holds in {holds} of {of}"
    )


Check = Callable[[Board], tuple[str, str]]


def c1(b: Board) -> tuple[str, str]:
    worst = {d: b.worst(A01, d)[1] for d in CLASSICAL}
    robust = [d for d in CLASSICAL if d not in ("Krum", "Multi-Krum")]
    order = sorted(CLASSICAL, key=lambda d: worst[d].mean)
    lf = b.get(A01, "label flipping", "Krum")
    shows = (
        f"worst case at {A01}, lowest first: "
        + ", ".join(f"{d} {worst[d]}" for d in order)
        + f"; Krum under label flipping {lf} (the logs: ~1%; not scored)"
    )
    held = sum(worst[k].mean < min(worst[d].mean for d in robust) for k in ("Krum", "Multi-Krum"))
    return shows, verdict(held, 2)


def _bucketing(b: Board, settings: list[str]) -> tuple[str, str]:
    parts, held, of = [], 0, 0
    for s in settings:
        wins = [
            a for a in b.attacks()
            if b.get(s, a, "bucketing + median").mean > b.get(s, a, "median").mean
        ]  # fmt: skip
        parts.append(f"{s}: bucketing raises the median's accuracy under {len(wins)} of "
                     f"{len(b.attacks())} attacks ({', '.join(wins) or 'none'})")  # fmt: skip
        held += len(wins)
        of += len(b.attacks())
    return "; ".join(parts), verdict(held, of)


def c2(b: Board) -> tuple[str, str]:
    return _bucketing(b, [A05, A01])


def c3(b: Board) -> tuple[str, str]:
    return "the board has bucketing before the median only", "not measured"


def c4(b: Board) -> tuple[str, str]:
    rules = ["Krum", "median", "geometric median"]
    iid = {d: b.drop(IID, "Mimic", d) for d in rules}
    hi = {d: b.drop(A01, "Mimic", d) for d in rules}
    fedavg = b.drop(A01, "Mimic", "FedAvg")
    shows = (
        "accuracy drop under Mimic from the rule's clean cell (points), IID → α = 0.1: "
        + ", ".join(f"{d} {100 * iid[d]:.1f} → {100 * hi[d]:.1f}" for d in rules)
        + f"; FedAvg at α = 0.1: {100 * fedavg:.1f}; accuracy under Mimic at α = 0.1: "
        + ", ".join(f"{d} {b.get(A01, 'Mimic', d)}" for d in [*rules, "FedAvg"])
    )
    held = sum(hi[d] > iid[d] and hi[d] > fedavg for d in rules)
    return shows, verdict(held, len(rules))


def c5(b: Board) -> tuple[str, str]:
    parts, held, of = [], 0, 0
    for s in (IID, A05, A01):
        got = {d: b.worst(s, d, among=["ALIE", "IPM"])[1] for d in CLASSICAL}
        cc = got["centered clipping"]
        other = max((d for d in got if d != "centered clipping"), key=lambda d: got[d].mean)
        parts.append(f"{s}: under the worse of ALIE and IPM, centered clipping {cc}, the best "
                     f"other rule {other} {got[other]}{below(cc, got[other])}")  # fmt: skip
        held += cc.mean >= got[other].mean
        of += 1
    return "the fixed ALIE and IPM, as in the logs. " + "; ".join(parts), verdict(held, of)


def c6(b: Board) -> tuple[str, str]:
    parts, held = [], 0
    rules = ["median", "trimmed mean", "geometric median"]
    strong = ["ALIE", "IPM", "ALIE (adaptive)", "IPM (adaptive)"]
    for d in rules:  # the logs' attacks: ALIE, IPM, sign and label flipping
        attack, cell = b.worst(IID, d, among=[*strong, "sign flipping", "label flipping"])
        mild = max(b.drop(IID, a, d) for a in ("sign flipping", "label flipping"))
        hard = max(b.drop(IID, a, d) for a in strong)
        parts.append(
            f"{d}: worst of those {attack} {cell}; largest drop from ALIE/IPM (fixed or adaptive) "
            f"{100 * hard:.1f}, from sign or label flipping {100 * mild:.1f}"
        )
        held += attack in strong and mild < hard
    return "IID/20%: " + "; ".join(parts), verdict(held, len(rules))


def c7(b: Board) -> tuple[str, str]:
    return "every client uses momentum 0.9; the board does not vary it", "not measured"


def c8(b: Board) -> tuple[str, str]:
    parts, held = [], 0
    for d in ("median", "trimmed mean"):
        agr = min(b.get(IID, a, d).mean for a in ("Min-Max", "Min-Sum"))
        old = min(b.get(IID, a, d).mean for a in ("Fang (trimmed mean)", "ALIE"))
        parts.append(f"{d}: Min-Max/Min-Sum {100 * agr:.1f}, Fang (trimmed mean)/ALIE "
                     f"{100 * old:.1f}")  # fmt: skip
        held += agr < old
    return "IID/20%, the lower of each pair: " + "; ".join(parts), verdict(held, 2)


def c9(b: Board) -> tuple[str, str]:
    cell = b.get(IID, "ALIE", "Bulyan (f=1)")
    attack, worst = b.worst(IID, "Bulyan (f=1)")
    shows = (
        f"Bulyan (f = 1, 2 attackers) under ALIE at IID/20%: {cell} (clean "
        f"{b.get(IID, CLEAN, 'Bulyan (f=1)')}); its worst attack there: {attack} {worst}; "
        f"collapse counted as ≤ {100 * COLLAPSE:.0f}%"
    )
    return shows, verdict(int(cell.mean <= COLLAPSE), 1)


def c10(b: Board) -> tuple[str, str]:
    got = {s: b.worst(s, "NNM + median") for s in (IID, A01, A05_30)}
    shows = "NNM + median (not NNM + clipping), worst case: " + ", ".join(
        f"{s} {a} {c}" for s, (a, c) in got.items()
    )
    return shows + "; ByzFL's collapse is at γ = 0 (one class per client), beyond α = 0.1", (
        "not measured in its setting"
    )


def c11(b: Board) -> tuple[str, str]:
    parts, held, of = [], 0, 0
    for s in (A05, A01):
        w = {d: b.worst(s, d)[1] for d in ("NNM + median", "median", "bucketing + median")}
        note = below(w["median"], w["NNM + median"]).strip()
        parts.append(", ".join(f"{d} {c}" for d, c in w.items()) + f" at {s} {note}")
        held += w["NNM + median"].mean > w["median"].mean
        held += w["NNM + median"].mean > w["bucketing + median"].mean
        of += 2
    return "worst case: " + "; ".join(parts), verdict(held, of)


def c12(b: Board) -> tuple[str, str]:
    rules = ["FedAvg"] + CLASSICAL
    loss = {d: tie_safe(b.get(IID, CLEAN, d).mean - b.get(A01, CLEAN, d).mean) for d in rules}
    shows = "clean accuracy lost from IID to α = 0.1 (points): " + ", ".join(
        f"{d} {100 * v:.1f}" for d, v in loss.items()
    )
    held = sum(loss[d] > loss["FedAvg"] for d in ("median", "geometric median"))
    return shows + " (held: the median and the geometric median lose more than FedAvg)", verdict(
        held, 2
    )


def _rank(b: Board) -> dict[str, int]:
    """Each defense's rank by its worst case averaged over the settings (the board's score;
    every defense must have every setting's worst case); ties share the better rank."""
    defenses = sorted({d for (r, _, _, d) in b.cells if r == "untargeted"})
    settings = b.settings()
    score = {
        d: tie_safe(sum(b.worst(s, d)[1].mean for s in settings) / len(settings)) for d in defenses
    }
    return {d: 1 + sum(v > score[d] for v in score.values()) for d in defenses}


def c13(b: Board) -> tuple[str, str]:
    place = _rank(b)
    named = ["median", "FLTrust", "DnC", "FLAME"]
    if any(d not in place for d in named):
        raise Missing("one of " + ", ".join(named))
    shows = (
        "rank by the worst case averaged over the settings: "
        + ", ".join(f"{d} {place[d]}" for d in named)
        + f" of {len(place)} defenses"
    )
    return shows + " (held: rank ≤ half of them)", verdict(
        sum(place[d] <= len(place) / 2 for d in named), len(named)
    )


def c14(b: Board) -> tuple[str, str]:
    fedavg = b.get(A01, "label flipping", "FedAvg")
    best = max(CLASSICAL, key=lambda d: b.get(A01, "label flipping", d).mean)
    top = b.get(A01, "label flipping", best)
    shows = (
        f"{A01} under label flipping: FedAvg {fedavg}; the best of the classical rules: "
        f"{best} {top}{below(top, fedavg)}"
    )
    return shows, verdict(int(fedavg.mean > top.mean), 1)


def c15(b: Board) -> tuple[str, str]:
    settings = b.settings()
    got = {s: b.worst(s, "geometric median") for s in settings}
    shows = (
        "the claim (literature.md finds it unsupported): geometric median's worst attack: "
        + ", ".join(f"{s} {a} {c}" for s, (a, c) in got.items())
    )
    return shows, verdict(sum(a == "sign flipping" for a, _ in got.values()), len(got))


def c16(b: Board) -> tuple[str, str]:
    settings = b.settings()
    parts, held, of = [], 0, 0
    for s in settings:
        attack, cell = b.worst(s, "FLTrust")
        clean = b.get(s, CLEAN, "FLTrust")
        same = overlap(cell, clean)
        parts.append(f"{s} {attack} {cell} against clean {clean}{below(cell, clean)}")
        if cell.mean >= clean.mean or same is not None:
            held += cell.mean >= clean.mean or bool(same)
            of += 1
    shows = "FLTrust's worst case: " + "; ".join(parts)
    return shows + " (held: not below the clean cell beyond the intervals)", verdict(held, of)


def _targeted_settings(b: Board) -> list[str]:
    got = b.settings("targeted")
    if not got:
        raise Missing("the targeted regime")
    return got


def c17(b: Board) -> tuple[str, str]:
    parts, held, of = [], 0, 0
    rules = ["FedAvg", "median", "trimmed mean", "FL-WBC"]
    for s in _targeted_settings(b):
        got = {d: b.get(s, "eq. 3 (paper)", d, "targeted").persists for d in rules}
        parts.append(f"{s}: " + ", ".join(
            f"{d} {'n/a' if v is None else f'{v:.1f}'}" for d, v in got.items()
        ))  # fmt: skip
        if all(v is not None for v in got.values()):
            held += got["FL-WBC"] < min(got["median"], got["trimmed mean"])  # type: ignore[operator]
            of += 1
    head = (
        "eq. 3 (the paper's attack) in rounds 1-10, not one round; rounds its success stays "
        "above one half after the window (a lower bound where it lasts to the end)"
    )
    tail = " (held: FL-WBC below the median and the trimmed mean)"
    return head + ": " + "; ".join(parts) + tail, verdict(held, of)


def c18(b: Board) -> tuple[str, str]:
    parts, held, of = [], 0, 0
    for s in _targeted_settings(b):
        lead = b.worst(s, "LeadFL + median", "targeted", BACKDOORS)
        med = b.worst(s, "median", "targeted", BACKDOORS)
        note = below(lead[1], med[1])
        parts.append(f"{s}: median {med[0]} {med[1]}, LeadFL + median {lead[0]} {lead[1]}{note}")
        held += lead[1].mean < med[1].mean
        of += 1
    head = "worst backdoor's success over baseline (the fixed convention, not LeadFL's bursty one)"
    return head + ": " + "; ".join(parts), verdict(held, of)


def c19(b: Board) -> tuple[str, str]:
    parts, held, of = [], 0, 0
    for s in _targeted_settings(b):
        defenses = sorted(
            {d for (r, x, _, d) in b.cells if r == "targeted" and x == s and d != "FedAvg"}
        )
        worst = [b.worst(s, d, "targeted", BACKDOORS)[1] for d in defenses]
        measured = [c for c in worst if c.half is not None]  # one seed: no interval to be beyond
        if not measured:
            parts.append(f"{s}: no worst case with an interval")
            continue
        hit = [c for c in measured if c.mean - c.half > 0]  # type: ignore[operator]
        of_ = f" ({len(measured)} with an interval)" if len(measured) < len(defenses) else ""
        parts.append(f"{s}: {len(hit)} of {len(defenses)}{of_}")
        held += 2 * len(hit) > len(measured)
        of += 1
    head = (
        "defenses (FedAvg aside) where some backdoor's success is above its clean baseline "
        "beyond its interval"
    )
    return head + ": " + "; ".join(parts) + " (held: more than half of those with an interval)", (
        verdict(held, of)
    )


CHECKS: list[Check] = [
    c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17, c18, c19
]  # fmt: skip


def main(out: Path) -> int:
    try:
        board = Board(out / "summary.csv")
    except FileNotFoundError:
        print(f"bench_claims: no summary.csv in {out}", file=sys.stderr)
        return 2
    lines = [
        "# The literature's claims against the board",
        "",
        "Generated by `python scripts/bench_claims.py OUT` from the board's summary.csv; the "
        "claims and their sources are in literature.md (same numbers). Values in percent, "
        "± the 95% interval's half-width.",
        "",
        "| # | the board shows | verdict |",
        "|---|---|---|",
    ]
    for i, check in enumerate(CHECKS, 1):
        try:
            shows, said = check(board)
        except Missing as err:
            shows, said = f"needs {err}", "not finished"
        lines.append(f"| {i} | {shows} | {said} |")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1])))

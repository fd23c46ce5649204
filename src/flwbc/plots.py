"""The paper's figure types, drawn headless with matplotlib (Agg), one PNG and one SVG each.

- `plot_curves`: misclassification confidence per round (Fig. 2, 3, 6): one panel per setting
  (or another axis), one line per defense, the mean over seeds with the min–max band, adversarial
  rounds marked with black circles as in the paper, and the 50% mitigation threshold.
- `plot_tradeoff`: benign accuracy against attack mitigation rounds (Fig. 4, 5): one panel per
  setting, one marker series per defense family; hollow markers are lower bounds (the attack was
  not mitigated within the observed window); the dashed line is the warm model's accuracy.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from flwbc.errors import FlwbcError
from flwbc.experiments.results import BranchResult, Point, SpecResults
from flwbc.experiments.specs import series_of
from flwbc.runio import atomic_write_bytes


def require_matplotlib() -> None:
    """Fail early, with one line, where matplotlib is missing."""
    _pyplot()


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib
    except ImportError:
        raise FlwbcError("plots need matplotlib: pip install 'flwbc[plots]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, prefix: Path) -> list[Path]:  # type: ignore[no-untyped-def]
    import io

    prefix.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight")
        path = prefix.with_suffix(f".{ext}")
        atomic_write_bytes(path, buf.getvalue())
        out.append(path)
    return out


def _finish(plt, fig, prefix: Path, title: str | None = None, right: float = 1.0) -> list[Path]:  # type: ignore[no-untyped-def]
    """Title, lay out (the panels within the left `right` share of the width, the rest left
    for a colour bar), save (PNG and SVG) and close a figure."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0.0, 0.0, right, 1.0))
    try:
        return _save(fig, prefix)
    finally:
        plt.close(fig)


def _panels(res: SpecResults, axis: str) -> dict[str, list[Point]]:
    panels: dict[str, list[Point]] = defaultdict(list)
    for p in res.points:
        if p.runs:
            panels[p.coords[axis]].append(p)
    return panels


def _grid(plt, n: int, width: float = 3.6, height: float = 3.0):  # type: ignore[no-untyped-def]
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = [a for row in axes for a in row]
    for a in flat[n:]:
        a.set_visible(False)
    return fig, flat


def _adversarial(records: list[dict[str, Any]]) -> tuple[int, ...]:
    return tuple(rec["round"] for rec in records if rec["adversarial"])


def _curve(
    ax: Any, runs: list[BranchResult], label: str, color: str, *, band: bool, ls: str = "-"
) -> None:
    """The mean confidence of runs that share an attack schedule, their min-max band, and the
    adversarial rounds circled."""
    per_round = list(zip(*[[rec["target_conf"] for rec in r.records] for r in runs], strict=False))
    mean = [statistics.fmean(v) for v in per_round]
    rounds = [rec["round"] for rec in runs[0].records][: len(mean)]
    ax.plot(rounds, mean, lw=1.5, ls=ls, color=color, label=label)
    if band and len(runs) > 1:
        lo, hi = [min(v) for v in per_round], [max(v) for v in per_round]
        ax.fill_between(rounds, lo, hi, color=color, alpha=0.15, lw=0)
    adv = [i for i, rec in enumerate(runs[0].records[: len(mean)]) if rec["adversarial"]]
    ax.plot(
        [rounds[i] for i in adv],
        [mean[i] for i in adv],
        "o",
        mfc="none",
        mec="black",
        ms=7,
        zorder=5,
    )


def plot_curves(res: SpecResults, prefix: Path) -> list[Path]:
    """Misclassification confidence per round; returns the files written."""
    plt = _pyplot()
    panel_axis = res.spec.plot.panels
    series_axis = res.series_axis
    panels = _panels(res, panel_axis)
    if not panels:
        return []
    fig, axes = _grid(plt, len(panels))
    titles = _titles(res)
    for ax, (name, pts) in zip(axes, panels.items(), strict=False):
        for k, p in enumerate(pts):
            label = " / ".join(
                str(p.coords[a])
                for a in res.axes()
                if a not in (panel_axis, "setting") or a == series_axis
            )
            schedules = {_adversarial(r.records) for r in p.runs}
            if len(schedules) == 1:
                _curve(ax, p.runs, label, f"C{k}", band=True)
            else:
                # Seeds attacked in different rounds (a random schedule): their mean would blur
                # every attack, so each seed is drawn with its own adversarial rounds.
                for j, r in enumerate(p.runs):
                    _curve(
                        ax,
                        [r],
                        f"{label}, seed {r.coords['seed']}",
                        f"C{k}",
                        band=False,
                        ls=("-", "--", ":", "-.")[j % 4],
                    )
        ax.axhline(0.5, color="0.5", ls=":", lw=1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(titles.get(name, str(name)), fontsize=10)
        ax.set_xlabel("round after the warm-up")
        ax.set_ylabel("misclassification confidence")
        ax.legend(fontsize=7, loc="upper right")
    return _finish(plt, fig, prefix, _suptitle(res))


def plot_tradeoff(res: SpecResults, prefix: Path) -> list[Path]:
    """Benign accuracy against mean attack mitigation rounds; returns the files written."""
    plt = _pyplot()
    panels = _panels(res, res.spec.plot.panels)
    if not panels:
        return []
    fig, axes = _grid(plt, len(panels))
    titles = _titles(res)
    markers = "osD^v<>"
    for ax, (name, pts) in zip(axes, panels.items(), strict=False):
        families: dict[str, list[Point]] = defaultdict(list)
        for p in pts:
            families[series_of(p.coords[res.series_axis])].append(p)
        for k, (fam, members) in enumerate(families.items()):
            xs, ys, errs, hollow, labels = [], [], [], [], []
            for p in members:
                mit, acc = p.mitigation(), p.accuracy()
                if mit is None or acc is None:
                    continue
                xs.append(mit[0])
                ys.append(100 * acc[0])
                errs.append(100 * acc[1])
                hollow.append(mit[1])
                labels.append(p.coords[res.series_axis].split(" ", 1)[-1])
            if not xs:
                continue
            color = f"C{k}"
            ax.plot(xs, ys, "-", color=color, lw=0.8, alpha=0.5)
            ax.errorbar(xs, ys, yerr=errs, fmt="none", ecolor=color, alpha=0.6, lw=1)
            for x, y, h, lab in zip(xs, ys, hollow, labels, strict=True):
                ax.plot(
                    [x],
                    [y],
                    markers[k % len(markers)],
                    color=color,
                    mfc="none" if h else color,
                    ms=6,
                )
                ax.annotate(lab, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
            ax.plot([], [], markers[k % len(markers)], color=color, label=fam)
        warm = [r.warm_acc for p in pts for r in p.runs if r.warm_acc is not None]
        if warm:
            ax.axhline(100 * statistics.fmean(warm), color="0.4", ls="--", lw=1, label="warm model")
        ax.set_title(titles.get(name, str(name)), fontsize=10)
        ax.set_xlabel("attack mitigation rounds (hollow: more than)")
        ax.set_ylabel("benign accuracy (%)")
        ax.legend(fontsize=7)
    return _finish(plt, fig, prefix, _suptitle(res))


def _titles(res: SpecResults) -> dict[str, str]:
    from flwbc.experiments.specs import load_settings

    return {k: v.title for k, v in load_settings().settings.items()}


def _suptitle(res: SpecResults) -> str:
    seeds = ", ".join(str(s) for s in res.seeds)
    return f"{res.spec.title} (seed{'s' if len(res.seeds) > 1 else ''} {seeds})"


def plot_spec(res: SpecResults, prefix: Path) -> list[Path]:
    """The spec's figure, by its `plot.kind`."""
    if res.spec.plot.kind == "curves":
        return plot_curves(res, prefix)
    if res.spec.plot.kind == "tradeoff":
        return plot_tradeoff(res, prefix)
    return []


def plot_aep(runs: dict[str, list[dict]], prefix: Path) -> list[Path]:
    """The AEP analysis of one or more runs (`flwbc analyze`): ‖δ_t‖ with eq. 7's estimate,
    the estimate's relative error, ‖Hδ‖/(‖H‖‖δ‖), and F_M(W_t) − F_M(W_t(S\\M)), per round."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
    for k, (name, recs) in enumerate(runs.items()):
        color = f"C{k}"
        rounds = [r["round"] for r in recs]
        norms = [r["delta_norm"] for r in recs]
        axes[0].plot(rounds, norms, color=color, label=name)
        est = [(r["round"], r["estimate_norm"]) for r in recs if "estimate_norm" in r]
        if est:
            axes[0].plot(*zip(*est, strict=True), "--", color=color, label=f"{name}: eq. 7")
        adv = [r for r in recs if r["adversarial"]]
        axes[0].plot(
            [r["round"] for r in adv], [r["delta_norm"] for r in adv], "o", mfc="none", mec="black"
        )
        err = [
            (r["round"], r["estimate_rel_error"])
            for r in recs
            if r.get("estimate_rel_error") is not None
        ]
        if err:
            axes[1].plot(*zip(*err, strict=True), "o-", color=color, ms=3, label=name)
        ratio = [
            (r["round"], r["h_delta_ratio"]) for r in recs if r.get("h_delta_ratio") is not None
        ]
        if ratio:
            axes[2].plot(*zip(*ratio, strict=True), "o-", color=color, ms=3, label=name)
        rand = [
            (r["round"], r["h_random_ratio"]) for r in recs if r.get("h_random_ratio") is not None
        ]
        if rand:
            axes[2].plot(*zip(*rand, strict=True), ":", color=color, label=f"{name}: random δ")
        axes[3].plot(rounds, [r["fm_gap"] for r in recs], color=color, label=name)
    axes[0].set_yscale("symlog", linthresh=1e-6)
    axes[0].set_title("‖δ_t‖ (dashed: eq. 7)", fontsize=9)
    axes[1].set_title("eq. 7: ‖δ̂_t − δ_t‖ / ‖δ_t‖", fontsize=9)
    axes[2].set_title("‖H δ_t‖ / (‖H‖₂ ‖δ_t‖), benign clients", fontsize=9)
    axes[3].set_title("F_M(W_t) − F_M(W_t(S∖M))", fontsize=9)
    for ax in axes:
        ax.set_xlabel("round")
        ax.legend(fontsize=6)
    return _finish(plt, fig, prefix)


def plot_rules(records: list[dict[str, Any]], prefix: Path) -> list[Path]:
    """`flwbc compare-rules`: per round, the D_M confidence of the model each rule makes from
    the run's client updates (and its test accuracy where measured); adversarial rounds
    shaded."""
    plt = _pyplot()
    labels = list(dict.fromkeys(r["rule"] for r in records))
    with_acc = any(r["test_acc"] is not None for r in records)
    fig, axes = plt.subplots(1, 2 if with_acc else 1, figsize=(11 if with_acc else 5.5, 3.4))
    axes = list(axes) if with_acc else [axes]
    for k, label in enumerate(labels):
        mine = [r for r in records if r["rule"] == label]
        rounds = [r["round"] for r in mine]
        style = {"color": "black", "lw": 2.0} if k == 0 else {"color": f"C{k - 1}", "lw": 1.2}
        axes[0].plot(rounds, [r["target_conf"] for r in mine], "o-", ms=3, label=label, **style)
        if with_acc:
            accs = [100 * r["test_acc"] for r in mine]
            axes[1].plot(rounds, accs, "o-", ms=3, label=label, **style)
    for t in _adversarial([r for r in records if r["rule"] == labels[0]]):
        for ax in axes:
            ax.axvspan(t - 0.5, t + 0.5, color="red", alpha=0.1, lw=0)
    axes[0].axhline(0.5, color="grey", ls=":", lw=1)
    axes[0].set_ylabel("misclassification confidence")
    if with_acc:
        axes[1].set_ylabel("test accuracy (%)")
    for ax in axes:
        ax.set_xlabel("round")
        ax.legend(fontsize=7)
    return _finish(plt, fig, prefix, "the same client updates, aggregated by each rule")

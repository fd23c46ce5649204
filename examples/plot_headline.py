"""Plot misclassification confidence and test accuracy per round for branch runs.

usage: python examples/plot_headline.py RUNS_DIR OUT_PREFIX KIND [KIND ...]
RUNS_DIR holds `<kind>-s<seed>` run directories; writes OUT_PREFIX.png and OUT_PREFIX.svg with
one column per kind (confidence on top, accuracy below), one line per seed, the adversarial
round and the 50% confidence threshold marked. Columns are titled from the runs' configs
("no defense", "FL-WBC s = 0.4", "median + FL-WBC s = 0.4", ...). Needs matplotlib
(`pip install -e .[plots]`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from flwbc.client.wbc import WBCOptions  # noqa: E402
from flwbc.config import load_run_config  # noqa: E402
from flwbc.defenses.ldp import LDPOptions  # noqa: E402
from flwbc.runio import read_jsonl  # noqa: E402

RULES = {
    "fedavg": "",
    "median": "median",
    "trimmed_mean": "trimmed mean",
    "krum": "Krum",
    "multikrum": "Multi-Krum",
    "geomed": "geometric median",
}
PAPER_WBC = {"noise": "std", "params": "all", "hessian": "update", "reset_each_epoch": False}


def label(run_dir: Path) -> str:
    """A reader's name for a run's defenses, from its config.json."""
    cfg = load_run_config(run_dir)
    server = RULES.get(cfg.server.aggregator, cfg.server.aggregator)
    if "beta" in cfg.server.options:
        server += f" β = {cfg.server.options['beta']}"
    client = ""
    if cfg.defense.client == "wbc":
        wbc = WBCOptions(**cfg.defense.options.get("wbc", {}))
        ref = any(getattr(wbc, k) != v for k, v in PAPER_WBC.items())
        client = f"FL-WBC{' (reference code)' if ref else ''} s = {wbc.s:g}"
    elif cfg.defense.client == "ldp":
        client = f"local DP σ = {LDPOptions(**cfg.defense.options.get('ldp', {})).sigma:g}"
    return " + ".join(p for p in (server, client) if p) or "no defense"


def main(runs: Path, out: Path, kinds: list[str]) -> None:
    fig, axes = plt.subplots(
        2, len(kinds), figsize=(3.2 * len(kinds), 5.4), sharex=True, sharey="row", squeeze=False
    )
    for col, kind in enumerate(kinds):
        conf_ax, acc_ax = axes[0][col], axes[1][col]
        dirs = sorted(runs.glob(f"{kind}-s*"))
        if not dirs:
            sys.exit(f"no runs named {kind}-s<seed> in {runs}")
        for d in dirs:
            recs = read_jsonl(d / "rounds.jsonl")
            if not recs:
                continue
            rounds = [r["round"] for r in recs]
            seed = d.name.rsplit("-s", 1)[1]
            conf_ax.plot(rounds, [r["target_conf"] for r in recs], marker=".", label=f"seed {seed}")
            acc_ax.plot(rounds, [r["test_acc"] for r in recs], marker=".")
            for r in recs:
                if r["adversarial"]:
                    conf_ax.axvline(r["round"], color="0.8", lw=4, zorder=0)
                    acc_ax.axvline(r["round"], color="0.8", lw=4, zorder=0)
        conf_ax.axhline(0.5, color="k", ls=":", lw=1, label="50%: mitigated below")
        conf_ax.set_title(label(dirs[0]))
        acc_ax.set_xlabel("round")
        acc_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].set_ylabel("misclassification confidence")
    axes[1][0].set_ylabel("test accuracy")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        "One adversarial round (grey): 5 of 10 clients malicious, one image in D_M", fontsize=10
    )
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out.with_suffix(f".{ext}"), dpi=110)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])

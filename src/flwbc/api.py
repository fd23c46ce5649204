"""`flwbc.run(config)`: one federated experiment end to end, with its results on disk.

A run directory holds:
- `config.json`: the resolved config (loadable with `--config`) and, under `_meta`, the package,
  torch and Python versions;
- `rounds.jsonl`: one record per round, flushed as it ends; the same seed gives the same file
  bit for bit (wall times live in `timings.jsonl`, which naturally differ);
- `checkpoint.safetensors`: the global model after the last finished round, so an interrupted
  run continues with `resume=` exactly as if it had not stopped;
- `summary.json` and `model.safetensors` (the final global model) when the run ends.
"""

from __future__ import annotations

import fcntl
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from flwbc._version import __version__
from flwbc.config import ExperimentConfig, load_run_config, make_config
from flwbc.context import RoundPlan
from flwbc.data.datasets import dataset_image_shape, get_dataset
from flwbc.engine import Engine, get_engine
from flwbc.errors import FlwbcError
from flwbc.evaluation import measure_round
from flwbc.experiment import AGG_PREFIX, ATTACK_PREFIX, Experiment, check_plugin_options  # noqa: F401 (checkpoint prefixes, re-exported)
from flwbc.metrics import mitigation_rounds, rounds_until
from flwbc.models import FlatModel, build_model
from flwbc.plugins import LOADED as PLUGINS_LOADED
from flwbc.provenance import current_source
from flwbc.round import RoundOutput
from flwbc.runio import (
    RECORDS_ONLY,
    JsonlLog,
    atomic_write_bytes,
    atomic_write_json,
    jsonl_line,
    load_extra,
    load_model,
    read_json,
    read_jsonl,
    save_model,
)
from flwbc.runtime import Terminated, tune_allocator

BACKDOOR_LEVELS = (0.5, 0.1)
"""A backdoor run's summary counts, per attack window, the rounds until its success rate is
below each of these."""
RoundCallback = Callable[[dict[str, Any]], bool | None]


@dataclass
class RunResult:
    """A run's directory, per-round records, summary and final (or last saved) weights."""

    run_dir: Path
    records: list[dict[str, Any]]
    summary: dict[str, Any]
    weights: torch.Tensor

    @property
    def config(self) -> ExperimentConfig:
        """The validated config the run was made with."""
        return load_run_config(self.run_dir)

    def columns(self) -> dict[str, list[Any]]:
        """The per-round records as columns: field name -> one value per round (None where a
        round's record lacks the field)."""
        names = list(dict.fromkeys(k for r in self.records for k in r))
        return {n: [r.get(n) for r in self.records] for n in names}

    def to_pandas(self) -> Any:
        """The per-round records as a pandas DataFrame indexed by round (`pip install pandas`)."""
        try:
            import pandas as pd
        except ImportError:
            raise FlwbcError("to_pandas needs pandas: pip install -e '.[data]'") from None
        return pd.DataFrame(self.columns()).set_index("round")


def load_run(run_dir: str | Path) -> RunResult:
    """The result of a finished (or interrupted) run from its directory, as `run` returns it:
    records, summary, and the final model's weights (the last checkpoint's for a run that did
    not finish)."""
    run_dir = Path(run_dir)
    if (run_dir / RECORDS_ONLY).is_file():
        raise FlwbcError(f"{run_dir} was restored from an archive of records, without its model")
    cfg = load_run_config(run_dir)
    c, h, _ = dataset_image_shape(cfg.data.name, cfg.data.dir)
    module = build_model(
        cfg.model_name, c, h, get_dataset(cfg.data.name).num_classes, cfg.model_options
    )
    exp_model = FlatModel(module.to(getattr(torch, cfg.dtype)))
    for name in ("model.safetensors", "checkpoint.safetensors"):
        if (run_dir / name).is_file():
            w, _ = load_model(run_dir / name, exp_model)
            break
    else:
        raise FlwbcError(f"{run_dir} holds no model (model.safetensors or checkpoint.safetensors)")
    summary = read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else {}
    return RunResult(run_dir, read_jsonl(run_dir / "rounds.jsonl"), summary, w)


def _meta() -> dict[str, Any]:
    return {
        "flwbc_version": __version__,
        "source": current_source(),
        "plugins_loaded": list(PLUGINS_LOADED),  # in this process, entry points included
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        # float results move with the instruction set torch's kernels use (README, Test)
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "created": datetime.now().isoformat(timespec="seconds"),
    }


RUN_FILES = ("config.json", "rounds.jsonl", "timings.jsonl", "summary.json")


def _lock_run_dir(run_dir: Path) -> int:
    """Hold `run_dir/.run.lock` (an flock, released when its descriptor closes or the process
    ends) so that no two sessions, in one process or two, write one run directory; returns
    the lock's file descriptor."""
    fd = os.open(run_dir / ".run.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise FlwbcError(f"run directory {run_dir} is in use by another run") from None
    return fd


def _new_run_dir(cfg: ExperimentConfig) -> tuple[Path, int]:
    """A fresh run directory, locked. One that holds a finished round is kept (resume it or
    choose another name); one that an attempt left without any finished round (it failed or
    was stopped during round 1) is started afresh."""
    name = cfg.output.name
    if name is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        name = f"{stamp}-{cfg.data.name}-{cfg.defense.label}-{cfg.server.aggregator}-s{cfg.seed}"
    run_dir = Path(cfg.output.dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_run_dir(run_dir)
    if read_jsonl(run_dir / "rounds.jsonl") or (run_dir / "checkpoint.safetensors").exists():
        os.close(lock)
        raise FlwbcError(
            f"run directory {run_dir} already holds a run; resume it with --resume {run_dir} "
            "or choose another --name"
        )
    for f in RUN_FILES:
        (run_dir / f).unlink(missing_ok=True)
    return run_dir, lock


def _truncate_jsonl(path: Path, last_round: int) -> list[dict[str, Any]]:
    kept = [r for r in read_jsonl(path) if r["round"] <= last_round]
    atomic_write_bytes(path, "".join(jsonl_line(r) for r in kept).encode())
    return kept


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; `run_dir` holds every finished round and can be resumed."""

    def __init__(self, run_dir: Path):
        super().__init__(str(run_dir))
        self.run_dir = run_dir


class RunTerminated(RunInterrupted, Terminated):
    """SIGTERM during a run (where `flwbc.runtime.stop_on_sigterm` turned it into `Terminated`);
    `run_dir` holds every finished round and can be resumed."""


class RunSession:
    """One run's state between rounds: its experiment, weights, records and open log files.

    Every engine drives it the same way: `record` after each round, `finish` at the end, so
    every engine writes the same run directory."""

    def __init__(
        self,
        config: ExperimentConfig | dict[str, Any] | None,
        resume: str | Path | None,
        threads: int | None = None,
    ):
        if resume is not None:
            run_dir = Path(resume)
            if (run_dir / RECORDS_ONLY).is_file():
                raise FlwbcError(
                    f"{run_dir} was restored from an archive of its records: nothing to resume"
                )
            cfg = load_run_config(run_dir, "nothing to resume")
            if threads is not None:  # threads change no number; config.json keeps its own
                cfg = cfg.model_copy(update={"threads": threads})
            self._lock = _lock_run_dir(run_dir)
        else:
            cfg = config if isinstance(config, ExperimentConfig) else make_config(config or {})
            check_plugin_options(cfg)  # a rejected option leaves no run directory behind
            run_dir, self._lock = _new_run_dir(cfg)
        try:
            if resume is None:
                atomic_write_json(run_dir / "config.json", {**cfg.to_dict(), "_meta": _meta()})
            self._open(cfg, run_dir, resume)
        except BaseException:
            os.close(self._lock)
            raise

    def _open(self, cfg: ExperimentConfig, run_dir: Path, resume: str | Path | None) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        tune_allocator()
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        exp = self.exp = Experiment.prepare(cfg)
        self.records: list[dict[str, Any]] = []
        self.ckpt = run_dir / "checkpoint.safetensors"
        self.next_round = 1
        if resume is not None and self.ckpt.exists():
            w, meta = load_model(self.ckpt, exp.model)
            for prefix, plugin in exp.stateful().items():
                plugin.load_state_dict(
                    {k: v.to(exp.device) for k, v in load_extra(self.ckpt, prefix).items()}
                )
            done = int(meta["round"])
            self.records = _truncate_jsonl(run_dir / "rounds.jsonl", done)
            _truncate_jsonl(run_dir / "timings.jsonl", done)
            self.next_round = done + 1
        else:
            if resume is not None:
                for f in ("rounds.jsonl", "timings.jsonl"):
                    (run_dir / f).unlink(missing_ok=True)
            if cfg.init_model is not None:
                w, _ = load_model(cfg.init_model, exp.model)
            else:
                w = exp.initial_weights()
        self.w = w.to(exp.device, exp.dtype)
        if exp.attack is not None and self.next_round == 1:
            exp.attack.observe(exp, 0, self.w)
        self.last_acc: float | None = self.records[-1].get("test_acc") if self.records else None
        self.model_meta = {"model": cfg.model_name, "dataset": cfg.data.name, "seed": cfg.seed}
        self.log = JsonlLog(run_dir / "rounds.jsonl")
        self.tlog = JsonlLog(run_dir / "timings.jsonl")
        self.started = time.perf_counter()

    @property
    def done(self) -> bool:
        return self.next_round > self.cfg.federation.rounds

    def record(
        self, plan: RoundPlan, out: RoundOutput, tick: float, train_s: float
    ) -> dict[str, Any]:
        """Evaluate the new global model, write the round's record and checkpoint, advance."""
        exp, cfg, t = self.exp, self.cfg, plan.round
        self.w = w = out.weights
        total = cfg.federation.rounds
        record: dict[str, Any] = {
            "round": t,
            "adversarial": plan.adversarial,
            "clients": plan.clients,
            "malicious": [c for c, m in zip(plan.clients, plan.malicious, strict=True) if m],
            "train_loss": out.train_loss,
            **measure_round(exp.metrics, exp, w, t),
        }
        if record.get("test_acc") is not None:
            self.last_acc = record["test_acc"]
        record.update(out.info)
        self.log.write(record)
        self.tlog.write(
            {"round": t, "seconds": time.perf_counter() - tick, "train_seconds": train_s}
        )
        if exp.attack is not None:
            exp.attack.observe(exp, t, w)
        if cfg.output.checkpoint_every and (t % cfg.output.checkpoint_every == 0 or t == total):
            state = {
                prefix + k: v
                for prefix, plugin in exp.stateful().items()
                for k, v in plugin.state_dict().items()
            }
            save_model(self.ckpt, exp.model, w, {**self.model_meta, "round": t}, state)
        self.records.append(record)
        self.next_round = t + 1
        return record

    def close(self) -> None:
        """Close the log files and release the run directory (idempotent)."""
        self.log.close()
        self.tlog.close()
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def finish(self) -> RunResult:
        self.close()
        complete = self.done
        seconds = time.perf_counter() - self.started
        summary = _summary(self.cfg, self.exp, self.records, seconds, complete=complete)
        atomic_write_json(self.run_dir / "summary.json", summary)
        if complete:
            meta = {**self.model_meta, "round": self.cfg.federation.rounds}
            save_model(self.run_dir / "model.safetensors", self.exp.model, self.w, meta)
        return RunResult(self.run_dir, self.records, summary, self.w)


def run(
    config: ExperimentConfig | dict[str, Any] | None = None,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
    callback: RoundCallback | None = None,
    threads: int | None = None,
    announce: bool | None = None,
) -> RunResult:
    """Run an experiment (or continue the one in `resume`) and return its records and summary.

    `threads` sets torch's threads for a resumed run (its config's own otherwise; threads
    change no number). `announce`: a resumed run first prints, on stderr, the round it
    continues from (default: when `progress` is on, whose bar then starts at that round).

    `callback(record)` is called after every round; returning False stops the run after that
    round (it can be resumed later).
    """
    if threads is not None and resume is None:
        raise FlwbcError("run(threads=...) is for a resumed run; set the config's threads")
    sess = RunSession(config, resume, threads)
    cfg, exp = sess.cfg, sess.exp
    if resume is not None and (progress if announce is None else announce):
        print(f"flwbc: {_resume_line(sess)}", file=sys.stderr)
    bar = tqdm(
        total=cfg.federation.rounds,
        initial=sess.next_round - 1,
        disable=not progress,
        unit="round",
        desc=f"{cfg.data.name} {cfg.defense.label}/{cfg.server.aggregator}",
        file=sys.stderr,
    )

    def after_round(record: dict[str, Any]) -> bool:
        bar.set_postfix(_postfix(record, sess.last_acc), refresh=False)
        bar.update(1)
        return not (callback is not None and callback(record) is False)

    engine = get_engine(cfg.engine)
    try:
        if engine.drive is not None:
            engine.drive(sess, after_round)
        else:
            while not sess.done:
                tick = time.perf_counter()
                plan = exp.round_plan(sess.next_round)
                out = engine.train_round(exp, plan, sess.w)
                record = sess.record(plan, out, tick, time.perf_counter() - tick)
                if not after_round(record):
                    break
    except KeyboardInterrupt as err:
        sess.close()
        stopped = RunTerminated if isinstance(err, Terminated) else RunInterrupted
        raise stopped(sess.run_dir) from None
    except BaseException:
        sess.close()
        raise
    finally:
        bar.close()
    return sess.finish()


def _resume_line(sess: RunSession) -> str:
    """What a resumed run continues from: its last saved round of all its rounds."""
    saved, total = sess.next_round - 1, sess.cfg.federation.rounds
    if saved == 0:
        return f"resuming {sess.run_dir}: no round was saved, so it starts at round 1 of {total}"
    if sess.done:
        return f"resuming {sess.run_dir}: all {total} rounds are done already"
    return f"resuming {sess.run_dir} from round {saved} of {total} (its last saved round)"


def run_many(
    configs: list[ExperimentConfig | dict[str, Any]], *, progress: bool = True
) -> list[RunResult]:
    """Run several experiments in lock-step, each round of all of them together.

    Each config runs on its own engine. On the batched engine, runs that share the model, its
    dtype and the local update rule (e.g. a sweep over FL-WBC's s, DP's σ, aggregators or
    seeds) advance as one batched computation; each keeps its own randomness, files and
    results, identical to running it alone. Engines that drive a run elsewhere (flower) are
    refused: run those with `run`.
    """
    cfgs = [c if isinstance(c, ExperimentConfig) else make_config(c) for c in configs]
    engines: list[Engine] = []
    for cfg in cfgs:
        engine = get_engine(cfg.engine)
        if not engine.in_process:
            raise FlwbcError(
                f"run_many trains runs in this process; engine '{engine.name}' drives its own "
                "runs: use flwbc.run for each"
            )
        engines.append(engine)
    dirs = [Path(c.output.dir) / c.output.name for c in cfgs if c.output.name is not None]
    if len(set(dirs)) < len(dirs):
        twice = sorted({str(d) for d in dirs if dirs.count(d) > 1})
        raise FlwbcError(f"run_many: several configs write {', '.join(twice)}; name them apart")
    sessions: list[RunSession] = []
    try:
        for c in cfgs:
            sessions.append(RunSession(c, None))
    except BaseException:
        for sess in sessions:
            sess.close()
        raise
    total = sum(s.cfg.federation.rounds for s in sessions)
    bar = tqdm(
        total=total,
        disable=not progress,
        unit="round",
        desc=f"{len(sessions)} runs",
        file=sys.stderr,
    )
    try:
        while True:
            active = [(s, e) for s, e in zip(sessions, engines, strict=True) if not s.done]
            if not active:
                break
            for engine in dict.fromkeys(e for _, e in active):
                mine = [s for s, e in active if e is engine]
                tick = time.perf_counter()
                plans = [s.exp.round_plan(s.next_round) for s in mine]
                assert engine.train_rounds is not None
                outs = engine.train_rounds(
                    [(s.exp, p, s.w) for s, p in zip(mine, plans, strict=True)]
                )
                train_s = time.perf_counter() - tick
                for s, p, o in zip(mine, plans, outs, strict=True):
                    s.record(p, o, tick, train_s)
                bar.update(len(mine))
    except BaseException:
        for s in sessions:
            s.close()
        raise
    finally:
        bar.close()
    return [s.finish() for s in sessions]


def _postfix(record: dict[str, Any], last_acc: float | None) -> dict[str, str]:
    post = {"acc": "-" if last_acc is None else f"{last_acc:.3f}"}
    if record["target_conf"] is not None:
        post["conf"] = f"{record['target_conf']:.3f}"
    if record["adversarial"]:
        post["adv"] = "yes"
    return post


def _summary(
    cfg: ExperimentConfig,
    exp: Experiment,
    records: list[dict[str, Any]],
    seconds: float,
    complete: bool,
) -> dict[str, Any]:
    evaluated = [r for r in records if r["test_acc"] is not None]
    final = evaluated[-1] if evaluated else {}
    summary: dict[str, Any] = {
        "complete": complete,
        "rounds_done": len(records),
        "final_test_acc": final.get("test_acc"),
        "final_test_loss": final.get("test_loss"),
        "final_target_conf": records[-1]["target_conf"] if records else None,
        "adversarial_rounds": [r["round"] for r in records if r["adversarial"]],
        "seconds_this_session": seconds,
        "seed": cfg.seed,
        "flwbc_version": __version__,
        "source": current_source(),
        "malicious_clients": exp.malicious_ids,
        "malicious_set": exp.malicious_set.to_dict() if exp.malicious_set is not None else None,
    }
    if exp.x_mal is not None:
        summary["mitigation"] = mitigation_rounds(records)
    if any(r.get("backdoor_acc") is not None for r in records):
        summary["final_backdoor_acc"] = records[-1]["backdoor_acc"]
        summary["backdoor_mitigation"] = {
            str(level): rounds_until(records, "backdoor_acc", level) for level in BACKDOOR_LEVELS
        }
    if any("detection" in r for r in records):
        summary["detection"] = _detection_totals(records)
    return summary


def _detection_totals(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A detecting rule's confusion counts summed over the rounds, with precision
    tp/(tp+fp) and recall tp/(tp+fn) (None when their denominator is 0)."""
    rounds = [r["detection"] for r in records if "detection" in r]
    sums = {k: sum(d[k] for d in rounds) for k in ("tp", "fp", "fn", "tn")}
    tp, fp, fn = sums["tp"], sums["fp"], sums["fn"]
    return {
        **sums,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
    }

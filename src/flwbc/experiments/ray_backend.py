"""The Ray sweep backend: each run a Ray task on a cluster, its results written into the
driver's store (docs/cluster.md).

A task gets the run's request (`store.run_request`), the files of the run's last saved round
in the driver's store (so a retried or resumed run continues from there), the model it starts
from (a branch's warm-up) and the sources of the config's plug-in modules; it runs the run with
`flwbc.api.run` in a temporary directory on its node and streams back, after every round, the
run directory's files (logs and checkpoint), then the finished run's. The driver writes each
file atomically into `<store>/<run dir>`, logs before checkpoint and `summary.json` last, so no
node needs the store or a shared filesystem, and the store is always a valid resume point:
a node that dies loses at most the round in progress.

Retries are the driver's own, so a retried run restarts from the driver's latest copy: a task
lost to its node or worker process is submitted again up to `max_retries` times, then reported
failed with the reason. Errors of the run itself (a bad config, a missing dataset, a bug) are
not retried: they are reported like the local backend's, with the traceback in `worker.log`.

Ray is imported only here, and only when a Ray sweep starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import queue
import shutil
import signal
import site
import socket
import sys
import sysconfig
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from flwbc.errors import FlwbcError
from flwbc.experiments.specs import RunSpec
from flwbc.experiments.store import (
    LOCK,
    REQUEST,
    is_finished,
    lock_run,
    remove_stale_temp_files,
)
from flwbc.runio import atomic_write_bytes, atomic_write_json, model_metadata

PARTIAL_FILES = ("config.json", "timings.jsonl", "rounds.jsonl", "checkpoint.safetensors")
"""A running run's files, in the order the driver writes them: the logs before the checkpoint,
so that a kill between two writes leaves logs at least as long as the checkpoint (resuming cuts
them back to it), never a checkpoint ahead of its logs."""
FINAL_FILES = (*PARTIAL_FILES, "model.safetensors", "summary.json")
"""A finished run's files, `summary.json` last: `is_finished` sees a run only once every other
file is in place."""
PLUGIN_BYTES_LIMIT = 20 * 2**20


@dataclass(frozen=True)
class RayOptions:
    """Where and how a Ray sweep runs its runs."""

    address: str | None = None
    """A running cluster (`HOST:PORT` of its head, or `auto`); None: Ray's default, a cluster
    started on this machine by `ray start` or else a local one for the sweep alone."""
    cpus_per_run: float = 1.0
    """CPUs Ray reserves for each run (fractions allowed); its torch threads by default."""
    gpus_per_run: float = 0.0
    """GPUs Ray reserves for each run: 0.25 packs four runs on a GPU."""
    max_retries: int = 3
    """Times a run lost to a dead node or worker is started again before it counts as
    failed."""

    def __post_init__(self) -> None:
        if not self.cpus_per_run > 0:
            raise FlwbcError(f"--cpus-per-run must be positive, got {self.cpus_per_run:g}")
        if self.gpus_per_run < 0:
            raise FlwbcError(f"--gpus-per-run must be at least 0, got {self.gpus_per_run:g}")
        if self.max_retries < 0:
            raise FlwbcError(f"--max-retries must be at least 0, got {self.max_retries}")


def require_ray() -> Any:
    """The `ray` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise FlwbcError(
            "the ray backend needs Ray: pip install -e '.[ray]' (or '.[flower]')"
        ) from None
    return ray


# ---------------------------------------------------------------------------------------------
# Plug-ins
# ---------------------------------------------------------------------------------------------


def _installed_dirs() -> list[Path]:
    paths = sysconfig.get_paths()
    dirs = [*site.getsitepackages(), site.getusersitepackages(), paths["purelib"], paths["platlib"]]
    return [Path(d).resolve() for d in dict.fromkeys(dirs)]


def plugin_files(modules: Iterable[str]) -> dict[str, bytes]:
    """The files of the plug-in modules (a config's `plugins:`) that are not installed
    packages, keyed by their path relative to the folder that holds the top-level module:
    a module file or a package folder found on this process's path. Workers put them on their
    own path before loading the plug-ins, so no node needs a copy; installed plug-ins (and
    entry points) must be installed on every node."""
    installed = _installed_dirs()
    out: dict[str, bytes] = {}
    for top in dict.fromkeys(m.split(".")[0] for m in modules):
        if top == "flwbc":
            continue
        spec = importlib.util.find_spec(top)
        if spec is None:
            continue  # not here either: the worker reports it, as a local run would
        locations = list(spec.submodule_search_locations or [])
        if locations:
            root = Path(locations[0])
            files = sorted(
                p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
            )
        elif spec.origin and Path(spec.origin).is_file():
            root = Path(spec.origin)
            files = [root]
        else:
            continue
        if any(root.resolve().is_relative_to(d) for d in installed):
            continue
        for f in files:
            out[str(f.relative_to(root.parent))] = f.read_bytes()
    size = sum(len(b) for b in out.values())
    if size > PLUGIN_BYTES_LIMIT:
        raise FlwbcError(
            f"the plug-in modules' folders hold {size / 2**20:.0f} MB; install the plug-ins on "
            "every node instead of shipping them with each run"
        )
    return out


def _install_plugin_files(files: dict[str, bytes]) -> None:
    """Write shipped plug-in files into a folder named by their content and put it first on
    `sys.path` (once per worker process)."""
    if not files:
        return
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + hashlib.sha256(files[rel]).digest())
    root = Path(tempfile.gettempdir()) / f"flwbc-plugins-{digest.hexdigest()[:16]}"
    if not root.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=".flwbc-plugins-", dir=root.parent))
        for rel, data in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        try:
            os.rename(tmp, root)
        except OSError:  # another task on this node got there first
            shutil.rmtree(tmp, ignore_errors=True)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
        importlib.invalidate_caches()


# ---------------------------------------------------------------------------------------------
# The task, on a worker
# ---------------------------------------------------------------------------------------------


def _read(path: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    return {n: (path / n).read_bytes() for n in names if (path / n).is_file()}


def execute_run(
    request: dict[str, Any],
    files: dict[str, bytes],
    init_model: bytes | None,
    plugins: dict[str, bytes],
) -> Iterator[dict[str, Any]]:
    """The Ray task (a streaming generator) that runs one run on a worker.

    Yields `{"started": node id, ...}`, then `{"round": t, "files": ...}` after every round
    (the logs and the checkpoint of round t, read between two rounds so they agree), then
    either `{"done": True, "files": ...}` with every file of the finished run or
    `{"error": message}` for an error of the run itself. `files` (a saved round's) make it
    resume; `init_model` is the model file the config's `init_model` names on the driver."""
    import ray

    from flwbc.api import run

    yield {
        "started": ray.get_runtime_context().get_node_id(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    _install_plugin_files(plugins)
    _remove_stale_task_dirs()
    with _task_dir() as tmp:
        config = json.loads(json.dumps(request["config"]))
        path = tmp / config["output"]["name"]
        path.mkdir()
        for name, data in files.items():
            (path / name).write_bytes(data)
        config["output"]["dir"] = str(tmp)
        if init_model is not None:
            config["init_model"] = str(tmp / "init_model.safetensors")
            Path(config["init_model"]).write_bytes(init_model)
        out: queue.Queue[dict[str, Any]] = queue.Queue()

        def after_round(record: dict[str, Any]) -> None:
            out.put({"round": record["round"], "files": _read(path, PARTIAL_FILES)})

        def work() -> None:
            try:
                if files:
                    run(resume=path, progress=False, callback=after_round)
                else:
                    run(config, progress=False, callback=after_round)
                out.put({"done": True, "files": _read(path, FINAL_FILES)})
            except FlwbcError as err:
                out.put({"error": str(err)})
            except BaseException as err:
                why = f"{type(err).__name__}: {err}"
                out.put({"error": why, "traceback": traceback.format_exc()})

        # the run goes on in a thread so that this generator can yield between its rounds
        worker = threading.Thread(target=work, name="flwbc-run", daemon=True)
        worker.start()
        while "round" in (item := out.get()):
            yield item
        worker.join()
    # the last item after the cleanup: once the driver has it, it may end the job at once
    yield item


TASK_DIR_PREFIX = "flwbc-ray-"


@contextlib.contextmanager
def _task_dir() -> Iterator[Path]:
    """A temporary folder for one task, locked (flock on its `.lock`) while the task lives, so
    that a later task on the node can tell the folder of a killed task from a running one's."""
    tmp = Path(tempfile.mkdtemp(prefix=TASK_DIR_PREFIX))
    lock = lock_run(tmp)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if lock is not None:
            os.close(lock)


def _remove_stale_task_dirs() -> None:
    """Remove the temporary folders of tasks that were killed (their node's worker died, or
    their driver did): those whose lock nobody holds, and those a kill left half removed."""
    for d in Path(tempfile.gettempdir()).glob(f"{TASK_DIR_PREFIX}*"):
        if not (d / LOCK).is_file():
            with contextlib.suppress(OSError):
                if time.time() - d.stat().st_mtime > 600:  # not one being made: half removed
                    shutil.rmtree(d, ignore_errors=True)
            continue
        lock = lock_run(d)
        if lock is not None:
            shutil.rmtree(d, ignore_errors=True)
            os.close(lock)


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse a `HOST:PORT` (or `ray://HOST:PORT`) where nothing listens: Ray itself would try
    to reach it for minutes."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise FlwbcError(
            f"--address takes HOST:PORT (the head's, e.g. 10.0.0.1:6379) or auto, got '{address}'"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise FlwbcError(
            f"cannot reach the Ray cluster's head at {address}: {err.strerror or err}; start it "
            "with 'ray start --head --port PORT' (docs/cluster.md)"
        ) from None


def _connect(ray: Any, address: str | None) -> bool:
    """Connect to (or start) the cluster; True when this call did, so the sweep disconnects at
    its end; False when the process was already connected."""
    if ray.is_initialized():
        return False
    if address not in (None, "auto"):
        check_reachable(address)
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:  # a cluster of this machine's cores for this sweep alone
        from flwbc.runtime import usable_cpus

        kwargs.update(include_dashboard=False, num_cpus=usable_cpus())
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            ray.init(address=address or "local", **kwargs)
    except Exception as err:
        what = f"connect to the Ray cluster at {address}" if address else "start Ray here"
        raise FlwbcError(f"cannot {what}: {_first_line(err)}") from None
    finally:
        # ray.init makes SIGTERM exit the process; the sweep's own handling (stop the runs,
        # keep what they saved) and the caller's stay as they were
        with contextlib.suppress(ValueError, TypeError):  # not the main thread
            signal.signal(signal.SIGTERM, sigterm)
    return True


def _check_capacity(ray: Any, options: RayOptions) -> None:
    """Refuse a sweep whose runs no node of the cluster can take (Ray would queue them
    forever)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    need = {"CPU": options.cpus_per_run, "GPU": options.gpus_per_run}
    if any(all(n["Resources"].get(k, 0.0) >= v for k, v in need.items()) for n in nodes):
        return
    have = ", ".join(
        f"{n['Resources'].get('CPU', 0):g} CPU/{n['Resources'].get('GPU', 0):g} GPU" for n in nodes
    )
    raise FlwbcError(
        f"no node of the Ray cluster has {options.cpus_per_run:g} CPUs and "
        f"{options.gpus_per_run:g} GPUs for a run (--cpus-per-run, --gpus-per-run); its nodes "
        f"have {have or 'nothing'}"
    )


def _why(err: Exception) -> str:
    """A lost task's reason in a few words."""
    import ray.exceptions as rex

    kinds = (
        (rex.NodeDiedError, "node died"),
        (rex.WorkerCrashedError, "worker died"),
        (rex.OutOfMemoryError, "out of memory"),
        (rex.TaskCancelledError, "cancelled"),
    )
    for kind, text in kinds:
        if isinstance(err, kind):
            return text
    return f"{type(err).__name__}: {_first_line(err)}"


def _first_line(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def _checkpoint_round(path: Path) -> int:
    return int(model_metadata(path / "checkpoint.safetensors").get("round", 0))


@dataclass
class _Task:
    key: str
    path: Path
    request: dict[str, Any]
    lock: int
    attempts: int = 0
    resumes: int = 0
    """The saved round the current attempt continues from (0: from the start)."""
    written: dict[str, bytes] = field(default_factory=dict)

    @property
    def log(self) -> Path:
        return self.path / "worker.log"


class RayBackend:
    """Runs each run as a Ray task; at most `slots` at a time (None: Ray queues them all by
    their resources)."""

    name = "ray"

    def __init__(
        self,
        options: RayOptions,
        *,
        slots: int | None,
        runs: list[RunSpec],
        device: str | None,
    ) -> None:
        from flwbc.engine import get_engine

        for engine in dict.fromkeys(r.config.get("engine", "batched") for r in runs):
            if not get_engine(engine).in_process:
                raise FlwbcError(
                    f"the ray backend runs each run in a Ray task; engine '{engine}' drives its "
                    "runs elsewhere: use the local backend"
                )
        devices = {device} if device else {str(r.config.get("device", "cpu")) for r in runs}
        cuda = sorted(d for d in devices if d.startswith("cuda"))
        if cuda and options.gpus_per_run <= 0:
            raise FlwbcError(
                f"device {cuda[0]} on the ray backend needs --gpus-per-run (e.g. 0.25: four "
                "runs per GPU); Ray hides the GPUs from a task that reserved none"
            )
        self.ray = require_ray()
        self.options = options
        self.slots = slots
        self._tasks: dict[str, _Task] = {}
        self._streams: dict[Any, str] = {}
        self._models: dict[str, Any] = {}
        self._ended: dict[str, str | None] = {}
        self._owner = False
        shipped = plugin_files(m for r in runs for m in r.config.get("plugins", []))
        self._owner = _connect(self.ray, options.address)
        try:
            _check_capacity(self.ray, options)
            self._plugins = self.ray.put(shipped)
        except BaseException:
            self.close()
            raise
        self._remote = self.ray.remote(execute_run).options(
            num_cpus=options.cpus_per_run,
            num_gpus=options.gpus_per_run,
            num_returns="streaming",
            max_retries=0,
            retry_exceptions=False,
        )

    def start(self, key: str, path: Path, request: dict[str, Any]) -> None:
        path.mkdir(parents=True, exist_ok=True)
        lock = lock_run(path)
        if lock is None:
            self._ended[key] = f"{path} is being run by another process"
            return
        remove_stale_temp_files(path)
        if is_finished(path):
            os.close(lock)
            self._ended[key] = None
            return
        atomic_write_json(path / REQUEST, request)
        task = self._tasks[key] = _Task(key, path, request, lock)
        try:
            self._submit(task)
        except FlwbcError as err:
            self._log(task, f"error: {err}")
            self._release(task)
            self._ended[key] = f"{err} (log: {task.log})"

    def _model(self, where: str) -> Any:
        """The model file `where` (on the driver) in Ray's object store, put there once for
        all the branches that start from it."""
        if where not in self._models:
            try:
                data = Path(where).read_bytes()
            except OSError as err:
                raise FlwbcError(f"cannot read the model to start from, {where}: {err}") from None
            self._models[where] = self.ray.put(data)
        return self._models[where]

    def _submit(self, task: _Task) -> None:
        files: dict[str, bytes] = {}
        if all((task.path / n).is_file() for n in ("config.json", "checkpoint.safetensors")):
            files = _read(task.path, PARTIAL_FILES)
        task.resumes = _checkpoint_round(task.path) if files else 0
        init = task.request["config"].get("init_model")
        model = self._model(init) if init is not None else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            stream = self._remote.remote(task.request, files, model, self._plugins)
        self._streams[stream] = task.key

    def _log(self, task: _Task, text: str) -> None:
        with open(task.log, "a", encoding="utf-8") as f:
            f.write(f"{datetime.now().isoformat(timespec='seconds')} ray: {text}\n")

    def _write(self, task: _Task, files: dict[str, bytes]) -> None:
        """Write the files that changed since the last write, atomically, in `FINAL_FILES`'
        order; config.json with the store's paths in place of the node's."""
        for name in FINAL_FILES:
            data = files.get(name)
            if data is None or task.written.get(name) == data:
                continue
            if name == "config.json":
                cfg = json.loads(data)
                cfg["output"]["dir"] = task.request["config"]["output"]["dir"]
                cfg["init_model"] = task.request["config"].get("init_model")
                atomic_write_json(task.path / name, cfg)
            else:
                atomic_write_bytes(task.path / name, data)
            task.written[name] = data

    def _release(self, task: _Task) -> None:
        del self._tasks[task.key]
        os.close(task.lock)

    def _handle(self, task: _Task, item: dict[str, Any]) -> tuple[bool, str | None]:
        """Take one item of a task's stream; (whether the run ended, why it failed)."""
        if "started" in item:
            where = f"node {item['started']} ({item['host']}, pid {item['pid']})"
            resumes = f", resuming after round {task.resumes}" if task.resumes else ""
            self._log(task, f"attempt {task.attempts + 1} on {where}{resumes}")
            return False, None
        if "round" in item:
            self._write(task, item["files"])
            return False, None
        if "done" in item:
            self._write(task, item["files"])
            self._release(task)
            if not is_finished(task.path):
                self._log(task, "error: ended without a complete summary and model")
                return True, f"ended without a complete summary and model (log: {task.log})"
            self._log(task, "finished")
            return True, None
        self._log(task, f"error: {item['error']}")
        if "traceback" in item:
            with open(task.log, "a", encoding="utf-8") as f:
                f.write(item["traceback"])
        self._release(task)
        return True, f"{item['error']} (log: {task.log})"

    def _lost(self, task: _Task, err: Exception) -> str | None:
        """A task lost to its node or worker: submit it again, or say why it failed. An
        exception the task itself raised (outside the run, whose errors come as items) is not
        a lost node and is not retried."""
        why = _why(err)
        if isinstance(err, self.ray.exceptions.RayTaskError):
            self._log(task, f"error: {_first_line(err)}")
            self._release(task)
            return f"{_first_line(err)} (log: {task.log})"
        if task.attempts < self.options.max_retries:
            task.attempts += 1
            tries = f"{task.attempts} of {self.options.max_retries}"
            self._log(task, f"{why}; retrying ({tries}): {_first_line(err)}")
            try:
                self._submit(task)
                return None
            except FlwbcError as bad:
                self._log(task, f"error: {bad}")
                self._release(task)
                return f"{bad} (log: {task.log})"
        self._log(task, f"{why}; no retries left: {_first_line(err)}")
        self._release(task)
        tries = self.options.max_retries
        return f"{why} (retried {tries} time{'s' if tries != 1 else ''}; log: {task.log})"

    def poll(self, timeout: float) -> dict[str, str | None]:
        ended, self._ended = self._ended, {}
        if not self._streams:
            if not ended:
                time.sleep(timeout)
            return ended
        ready, _ = self.ray.wait(
            list(self._streams), num_returns=1, timeout=0 if ended else timeout
        )
        for stream in ready:
            key = self._streams[stream]
            task = self._tasks[key]
            while True:
                try:
                    ref = next(stream)
                    item = self.ray.get(ref)
                except StopIteration:
                    item = None
                    err: Exception = RuntimeError("the task ended without a result")
                except self.ray.exceptions.RayError as e:
                    item, err = None, e
                if item is None:
                    del self._streams[stream]
                    with contextlib.suppress(Exception):  # already over, or its node is gone
                        self.ray.cancel(stream, force=True)
                    why = self._lost(task, err)
                    if task.key not in self._tasks:
                        ended[key] = why
                    break
                over, why = self._handle(task, item)
                if over:
                    del self._streams[stream]
                    ended[key] = why
                    break
                if not stream.next_ready():
                    break
        return ended

    def stop(self) -> None:
        for stream in list(self._streams):
            with contextlib.suppress(Exception):  # already over, or the cluster is gone
                self.ray.cancel(stream, force=True)
        self._streams.clear()

    def close(self) -> None:
        for task in list(self._tasks.values()):
            self._release(task)
        if self._owner:
            self.ray.shutdown()
            self._owner = False

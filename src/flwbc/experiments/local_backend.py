"""The local sweep backend (the default): each run in its own worker process on this machine.

Workers are separate processes (`python -m flwbc.experiments.worker RUN_DIR`) that share the
cores: each gets `cores // jobs` torch threads unless told otherwise (two one-thread processes
share a 2-core machine better than one two-thread process), and they die with the sweep
(PR_SET_PDEATHSIG). A worker holds its run's lock file, so two sweeps never run the same run at
once, and writes straight into the store; its output goes to `<run dir>/worker.log`.
"""

from __future__ import annotations

import ctypes
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from flwbc.experiments.store import REQUEST, is_finished
from flwbc.runio import atomic_write_json


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def threads_per_worker(jobs: int, cpus: int) -> int:
    """Torch threads for each of `jobs` workers on `cpus` cores: an equal share, at least one.

    Sharing out the cores keeps workers from oversubscribing them (here two two-thread
    processes on two cores ran a quarter as fast as two one-thread ones) while a machine with
    more cores than jobs still uses them all."""
    return max(1, cpus // max(1, jobs))


def first_error(log: Path, offset: int = 0) -> str | None:
    """The line that says why a worker failed, from byte `offset` of its log: the first
    `error: ...` line (a user error), else the exception line that ends a traceback, else the
    last line."""
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            lines = [ln.rstrip() for ln in f.read().decode(errors="replace").splitlines()]
    except FileNotFoundError:
        return None
    lines = [ln for ln in lines if ln.strip()]
    for ln in lines:
        if ln.startswith("error: "):
            return ln.removeprefix("error: ")
    if any(ln.startswith("Traceback") for ln in lines):
        raised = [ln for ln in lines if not ln[0].isspace() and not ln.startswith("Traceback")]
        if raised:
            return raised[-1]
    return lines[-1] if lines else None


class LocalBackend:
    """Runs each run in a worker process, `slots` at a time.

    `reuse` (the default): each slot is one long-lived worker (`worker --serve`) that runs its
    runs one after another, so a sweep of short runs does not pay a new process, torch import
    and dataset load per run; a worker that dies (a crash, the OOM killer) fails its run and is
    replaced. `reuse=False`: a fresh process per run."""

    name = "local"

    def __init__(self, slots: int, *, reuse: bool = True) -> None:
        self.slots: int | None = slots
        self.reuse = reuse
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._paths: dict[str, Path] = {}
        self._log_start: dict[str, int] = {}
        self._idle: list[subprocess.Popen[bytes]] = []

    def _spawn(self, args: list[str], out: Any, serve: bool) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "flwbc.experiments.worker", *args],
            stdout=subprocess.PIPE if serve else out,
            stderr=out,
            stdin=subprocess.PIPE if serve else subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )

    def start(self, key: str, path: Path, request: dict[str, Any]) -> None:
        path.mkdir(parents=True, exist_ok=True)
        log = path / "worker.log"
        self._log_start[key] = log.stat().st_size if log.is_file() else 0
        self._paths[key] = path
        atomic_write_json(path / REQUEST, request)
        if not self.reuse:
            out = open(log, "ab")  # noqa: SIM115 - handed to the child
            try:
                self._procs[key] = self._spawn([str(path)], out, serve=False)
            finally:
                out.close()
            return
        while self._idle:  # a worker that died idle (the OOM killer) is not reused
            proc = self._idle.pop()
            if proc.poll() is None and self._send(proc, path):
                self._procs[key] = proc
                return
        proc = self._spawn(["--serve"], subprocess.DEVNULL, serve=True)
        if not self._send(proc, path):
            proc.wait()  # it died at start; poll reports the run as failed
        self._procs[key] = proc

    @staticmethod
    def _send(proc: subprocess.Popen[bytes], path: Path) -> bool:
        """Hand `path` to a serving worker; False when its pipe is closed (it died)."""
        assert proc.stdin is not None
        try:
            proc.stdin.write(f"{path}\n".encode())
            proc.stdin.flush()
        except OSError:
            return False
        return True

    def _failed(self, key: str, code: int | None) -> str:
        log = self._paths[key] / "worker.log"
        why = first_error(log, self._log_start[key]) or "no output"
        return f"{why} (exit {code}; log: {log})"

    def poll(self, timeout: float) -> dict[str, str | None]:
        """Wait up to `timeout` seconds, then return the runs whose worker ended: None for a
        finished run, else why it failed (with its log)."""
        if not self.reuse:
            time.sleep(timeout)
            ended: dict[str, str | None] = {}
            for key, proc in list(self._procs.items()):
                if proc.poll() is None:
                    continue
                del self._procs[key]
                ok = proc.returncode == 0 and is_finished(self._paths[key])
                ended[key] = None if ok else self._failed(key, proc.returncode)
            return ended
        by_out = {proc.stdout: key for key, proc in self._procs.items()}
        ready, _, _ = select.select(list(by_out), [], [], timeout) if by_out else ([], [], [])
        if not by_out:
            time.sleep(timeout)
        ended = {}
        for stream in ready:
            key = by_out[stream]
            proc = self._procs.pop(key)
            assert stream is not None
            line = stream.readline()
            if not line:  # the worker died with its run
                proc.wait()
                ended[key] = self._failed(key, proc.returncode)
                continue
            code = int(line)
            self._idle.append(proc)
            ok = code == 0 and is_finished(self._paths[key])
            ended[key] = None if ok else self._failed(key, code)
        return ended

    def stop(self) -> None:
        """Stop every worker at once; each run resumes from its last finished round."""
        for proc in [*self._procs.values(), *self._idle]:
            proc.terminate()
        for proc in [*self._procs.values(), *self._idle]:
            proc.wait()
        self._procs.clear()
        self._idle.clear()

    def close(self) -> None:
        """End the idle workers (their stdin closed, they exit)."""
        for proc in self._idle:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self._idle:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._idle.clear()

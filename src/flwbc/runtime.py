"""Process-level settings that make the engines' timings fast and stable.

The engines allocate and free temporaries of a few MB at every local step ([G, P] parameter
rows, activations). With glibc's defaults, a freed block at the top of the heap is returned to
the OS (trim threshold 128 KB, adapted at run time) and large blocks are served by fresh
`mmap`s, so the next step page-faults the same memory in again: the FL-WBC step on [10, 62006]
floats measured 1.6x slower (`benchmarks/bench_wbc_step.py --default-malloc`), and timings
jumped between processes as glibc's adaptive thresholds settled differently. Raising both
thresholds once per process keeps that memory mapped and reused.

`prefer_passive_openmp` makes OpenMP's idle threads sleep instead of spin (OMP_WAIT_POLICY
=PASSIVE, unless the environment sets a policy). With spinning waits, torch's two threads on a
2-core machine that two other busy processes share took 19 s a round (7-32 s) against 5.5 s with
one thread and 3.6 s with two sleeping threads; on the idle machine, 2.0 s with two threads,
sleeping or not, against 3.5 s with one (`benchmarks/bench_threads.py`). It must run before
torch loads its OpenMP runtime: `import flwbc` calls it first thing, so a process that
imported torch before flwbc keeps the runtime's own policy (set OMP_WAIT_POLICY=PASSIVE there).

`usable_cpus` counts the cores this process may run on (its CPU affinity, which a container or
`taskset` can narrow below `os.cpu_count()`), for sizing worker pools and thread counts.

`stop_on_sigterm` makes SIGTERM (a scheduler's or `kill`'s polite stop) stop a command the way
Ctrl-C does, every finished round saved, by raising `Terminated`, a KeyboardInterrupt that the
command line tells apart from Ctrl-C (exit status 143 instead of 130).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_done = False


def tune_allocator(trim_threshold: int = 1 << 30, mmap_threshold: int = 32 << 20) -> bool:
    """Raise glibc's malloc trim and mmap thresholds (once per process); False where the C
    library is not glibc."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(M_TRIM_THRESHOLD, trim_threshold)) and bool(
        mallopt(M_MMAP_THRESHOLD, mmap_threshold)
    )
    _done = ok
    return ok


def prefer_passive_openmp() -> None:
    """OMP_WAIT_POLICY=PASSIVE for this process and its children, unless already set."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def usable_cpus() -> int:
    """The cores this process may run on: its CPU affinity where the OS reports one."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt, so that everything that stops
    cleanly on Ctrl-C stops the same way on it."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated`; the previous handler is restored after.
    Outside the main thread, where no handler can be installed, nothing changes."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        if previous is not None:  # None: a handler not set from Python, which cannot be restored
            signal.signal(signal.SIGTERM, previous)

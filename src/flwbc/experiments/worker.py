"""The sweep's worker process, used by the local backend.

`python -m flwbc.experiments.worker RUN_DIR` runs (or resumes) the run described by
RUN_DIR/request.json and exits. `python -m flwbc.experiments.worker --serve` stays up and runs
one run directory per line of its standard input, one after another, answering each with a
line holding its exit status: a sweep of many short runs pays for starting Python, importing
torch and loading the dataset once per worker instead of once per run. Each run's output goes
to its own `worker.log` as before, and a run gives the same records either way (every random
stream is keyed by (seed, round, client), and nothing a run leaves behind in the process is
read by the next).
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from flwbc.api import run
from flwbc.errors import FlwbcError
from flwbc.experiments.store import REQUEST, is_finished, lock_run, remove_stale_temp_files
from flwbc.runio import read_json


def main(path: Path) -> int:
    lock = lock_run(path)
    if lock is None:
        print(f"{path} is being run by another process", file=sys.stderr)
        return 3
    try:
        remove_stale_temp_files(path)
        if is_finished(path):
            return 0
        request = read_json(path / REQUEST)
        if (path / "config.json").is_file():
            run(resume=path, progress=False)
        else:
            run(request["config"], progress=False)
    finally:
        os.close(lock)
    return 0


def _run_logged(path: Path) -> int:
    """`main(path)` with this process's stdout and stderr sent to the run's worker.log."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = os.open(path / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    os.dup2(log, 1)
    os.dup2(log, 2)
    try:
        return main(path)
    except FlwbcError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (log, *saved):
            os.close(fd)


def serve() -> int:
    """Run the run directories named on stdin, one per line; answer each with its status."""
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # nothing but answers on the reply channel
    try:
        for line in sys.stdin:
            path = Path(line.rstrip("\n"))
            reply.write(f"{_run_logged(path)}\n")
    except KeyboardInterrupt:  # Ctrl-C reaches the whole group: the sweep reports it
        return 130
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        sys.exit(serve())
    try:
        sys.exit(main(Path(sys.argv[1])))
    except FlwbcError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

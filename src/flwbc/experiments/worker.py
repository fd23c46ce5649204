"""`python -m flwbc.experiments.worker RUN_DIR`: run (or resume) the run described by
RUN_DIR/request.json; used by the sweep runner, one process per run."""

from __future__ import annotations

import os
import sys
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


if __name__ == "__main__":
    try:
        sys.exit(main(Path(sys.argv[1])))
    except FlwbcError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

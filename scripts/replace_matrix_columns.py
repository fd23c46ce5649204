"""Replace some defense columns of a committed matrix with the cells of a rerun.

When a rule is corrected, only its columns need rerunning: run a spec that holds those columns
(the same setting, base, branch and attacks) into a store of its own, then

    python scripts/replace_matrix_columns.py BUNDLED_MATRIX OUT RERUN_SPEC RERUN_STORE \
        [--data-dir DATA]

reads OUT/cells.csv, replaces every cell of the rerun's defense columns by the rerun's cells
(each keeps its run directory's name and compute time, from the rerun's store), and rewrites
OUT's cells.csv, matrix.md and heatmap from the bundled matrix's spec. The other cells are
kept as they are; matrix.md's command line names both steps.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import sys
import typing
from pathlib import Path

from flwbc.errors import FlwbcError
from flwbc.experiments.matrix import Cell, collect_cells, matrix_spec, write_matrix
from flwbc.experiments.specs import expand, load_settings


def read_cells(path: Path) -> list[Cell]:
    """The cells of a cells.csv, typed as `Cell`'s fields."""
    hints = typing.get_type_hints(Cell)
    cells = []
    for row in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))):
        values: dict[str, object] = {}
        for f in dataclasses.fields(Cell):
            raw, hint = row.get(f.name, ""), str(hints[f.name])
            if raw == "":
                values[f.name] = f.default  # None, False for the flags, 1 seed
            elif "bool" in hint:
                values[f.name] = raw == "True"
            elif "int" in hint:
                values[f.name] = int(raw)
            elif "float" in hint:
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        cells.append(Cell(**values))  # type: ignore[arg-type]
    return cells


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("matrix", help="the bundled matrix the committed cells come from")
    ap.add_argument("out", type=Path, help="the folder holding its cells.csv")
    ap.add_argument("rerun_spec", help="the spec of the rerun (.yaml)")
    ap.add_argument("rerun_store", type=Path, help="the rerun's run store")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    try:
        spec = matrix_spec(args.matrix)
        rerun = matrix_spec(args.rerun_spec)
        runs = expand(rerun, load_settings(), data_dir=args.data_dir)
        new = {(c.attack, c.defense): c for c in collect_cells(rerun, runs, args.rerun_store)}
        missing = [k for k, c in new.items() if c.kind is None]
        if missing:
            raise FlwbcError(f"the rerun has unfinished cells, e.g. {missing[0]}")
        unknown = set(rerun.axes["defense"]) - set(spec.axes["defense"])
        if unknown:
            raise FlwbcError(f"the rerun has columns the matrix lacks: {sorted(unknown)}")
        cells = [new.get((c.attack, c.defense), c) for c in read_cells(args.out / "cells.csv")]
        command = (
            f"flwbc matrix {args.matrix} --no-run --out {args.out}, then "
            f"python scripts/replace_matrix_columns.py {args.matrix} {args.out} "
            f"{args.rerun_spec} {args.rerun_store} (the columns "
            f"{', '.join(rerun.axes['defense'])} rerun)"
        )
        write_matrix(spec, cells, args.out, command=command)
    except (FlwbcError, OSError, KeyError) as err:
        print(f"replace_matrix_columns: error: {err}", file=sys.stderr)
        return 2
    print(f"replaced {len(new)} cells in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

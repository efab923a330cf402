"""Benchmark stet's decorator against the performance targets of the spec (S8).

Run from the repository root:

    python benchmarks/run.py            # full run: 1k to 1M records (long: not on a busy box)
    python benchmarks/run.py --quick    # smoke run: 1k, 10k and 100k records, fewer samples
    python benchmarks/run.py --quick --postgres postgresql://user@host:5432/db
    python benchmarks/run.py --markdown # also print the table of the performance page

The measurements live in the ``stetbench`` package next to this file (see its
docstring for the modules). This script only puts this checkout's ``src/`` first on
``sys.path``, so that the stet measured is the one beside it, and dispatches: with
``--child TASK`` it is the fresh-process side of a measurement (`stetbench.child`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE.parent / "src", HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))  # measure the checkout this script lives in


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        from stetbench.child import main as child_main

        child_main(json.loads(argv[1]))
        return
    from stetbench.cli import main as cli_main

    cli_main(argv)


if __name__ == "__main__":
    main()

"""The command line of ``benchmarks/run.py`` (everything but ``--child``).

Measures (or, with ``--render``, re-reads an earlier ``results.json``), writes
``results.json`` and the plots to ``--out``, prints the text report and, with
``--markdown``, the table of the docs' performance page.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from stetbench import ROOT
from stetbench.plan import FULL, QUICK
from stetbench.timing import progress


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Benchmark stet against its targets (S8).")
    p.add_argument(
        "--quick",
        action="store_true",
        help="1k, 10k and 100k records, fewer samples, keys and workers (smoke run)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where results.json and the plots go (default: docs/assets/benchmarks)",
    )
    p.add_argument(
        "--tmp", type=Path, default=None, help="directory for the stores (default: a new temp dir)"
    )
    p.add_argument("--keep", action="store_true", help="keep the stores afterwards")
    p.add_argument(
        "--postgres",
        metavar="URL",
        default=None,
        help="also measure PostgreSQL at this postgresql:// URL (tables bench_<pid>_*, "
        "dropped at the end)",
    )
    p.add_argument(
        "--markdown", action="store_true", help="also print the table of the performance page"
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="measure nothing: print the tables and redraw the plots of an earlier run",
    )
    return p


def main(argv: list[str]) -> None:
    from stetbench.plots import plots
    from stetbench.report import markdown_table, text_report

    args = parser().parse_args(argv)
    if args.render is not None:
        results = json.loads(args.render.read_text())
        if not args.no_plots:
            plots(results, args.out if args.out is not None else args.render.parent)
        print(text_report(results))
        if args.markdown:
            print(markdown_table(results))
        return

    from stetbench.suite import run

    plan = QUICK if args.quick else FULL
    out = args.out if args.out is not None else ROOT / "docs" / "assets" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    if args.tmp is not None:
        args.tmp.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="stet-bench-", dir=args.tmp)).resolve()
    started = time.perf_counter()
    try:
        results = run(plan, work, args.postgres)
    finally:
        if args.keep:
            progress(f"stores kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["duration_s"] = time.perf_counter() - started

    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    written = [out / "results.json"]
    if not args.no_plots:
        written += plots(results, out)
    print(text_report(results))
    if args.markdown:
        print(markdown_table(results))
    progress(f"done in {results['duration_s']:.0f} s; wrote {', '.join(map(str, written))}")

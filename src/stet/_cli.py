"""The ``stet`` command line: status, show, reset and import for a store."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from stet._decorator import DEFAULT_STORE
from stet._errors import StoreError
from stet._identity import Identity, check_name
from stet._utilities import UnknownKeyColumn, existing, load, reset, status
from stet.backends import get_backend

__all__ = ["main"]

_STORE_HELP = (
    "the store: a .csv, .json, .sqlite/.db or .parquet file, or a postgresql:// URL "
    f"(default: {DEFAULT_STORE} in the current directory)"
)


class _UserError(Exception):
    """A mistake on the command line: printed as one line, exit code 2."""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give N >= 0 (0 shows all)")
    return value


def _parser() -> argparse.ArgumentParser:
    from stet import __version__

    parser = argparse.ArgumentParser(
        prog="stet",
        description="Look at and edit a stet store (which parameter combinations completed).",
    )
    parser.add_argument("--version", action="version", version=f"stet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "status",
        help="summarise a store: runs, failures, runs in progress, progress over a grid",
        description="Summarise a store: completed runs (per function), failures, runs in "
        "progress on any host, and with --grid how much of a sweep is done and an ETA.",
    )
    p.add_argument("store", nargs="?", default=DEFAULT_STORE, metavar="STORE", help=_STORE_HELP)
    p.add_argument(
        "--grid",
        metavar="FILE_OR_JSON",
        help="the sweep's grid: a JSON file or JSON text, a dict of lists (their product) "
        'or a list of dicts, e.g. \'{"alpha": [0.1, 0.2], "seed": [0, 1, 2]}\'',
    )

    p = commands.add_parser(
        "show",
        help="print the completed (or failed) runs as a table",
        description="Print the most recent completed runs as a table (or the failures).",
    )
    p.add_argument("store", nargs="?", default=DEFAULT_STORE, metavar="STORE", help=_STORE_HELP)
    p.add_argument(
        "--limit", type=_positive, default=20, metavar="N", help="show the last N runs (0: all)"
    )
    p.add_argument("--failed", action="store_true", help="show the failures noted instead")

    p = commands.add_parser(
        "reset",
        help="remove one run, or the whole store",
        description="Remove the run with exactly the --where key values, or (with --yes, "
        "or after asking on a terminal) the whole store.",
    )
    p.add_argument("store", nargs="?", default=DEFAULT_STORE, metavar="STORE", help=_STORE_HELP)
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="remove the run with exactly these key values (repeat for each key)",
    )
    p.add_argument("--yes", action="store_true", help="remove the whole store without asking")

    p = commands.add_parser(
        "import",
        help="mark the runs listed in a CSV file of results as completed",
        description="Mark every row of a CSV file (with a header) as a completed run, "
        "identified by the --key columns' text.",
    )
    p.add_argument("results", help="a CSV file with a header row")
    p.add_argument("--key", required=True, help="comma-separated key columns, e.g. alpha,seed")
    p.add_argument("--store", default=DEFAULT_STORE, metavar="STORE", help=_STORE_HELP)
    return parser


def _grid(text: str) -> Any:
    source = text
    if not text.lstrip().startswith(("{", "[")):
        try:
            with open(text, encoding="utf-8") as fh:
                source = fh.read()
        except OSError as exc:
            raise _UserError(
                f"--grid {text!r}: not JSON, and not a file ({exc.strerror})"
            ) from None
    try:
        grid = json.loads(source)
    except ValueError as exc:
        raise _UserError(f"--grid: not valid JSON ({exc})") from None
    if isinstance(grid, dict) and all(isinstance(v, list) for v in grid.values()):
        return grid
    if isinstance(grid, list) and all(isinstance(p, dict) for p in grid):
        return grid
    raise _UserError("--grid: give a dict of lists or a list of dicts of key values")


def _table(header: list[str], lines: list[list[str]]) -> None:
    table = [header, *lines]
    table = [[cell.replace("\n", "\\n") for cell in line] for line in table]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def _show(store: str, limit: int, failed: bool) -> None:
    backend = existing(store)
    if failed:
        frame = load(store, failed=True)
        shown = frame.tail(limit) if limit else frame
        columns = [c for c in frame.columns if c not in ("traceback",)]
        lines = [
            ["" if v is None else str(v) for v in row]
            for row in shown[columns].itertuples(index=False)
        ]
        _table([str(c) for c in columns], lines)
        if len(shown) < len(frame):
            print(f"({len(shown)} most recent of {len(frame)} failures; --limit 0 shows all)")
        return
    rows = backend.rows()
    keys = backend.key_columns()
    shown_rows = rows[-limit:] if limit > 0 else rows
    header = [*keys, "_stet_func", "_stet_timestamp"]
    lines = [
        [*(row.values.get(c, "") for c in keys), row.func or "", row.timestamp]
        for row in shown_rows
    ]
    _table(header, lines)
    if len(shown_rows) < len(rows):
        print(f"({len(shown_rows)} most recent of {len(rows)} runs; --limit 0 shows all)")


def _reset(store: str, where: list[str], yes: bool) -> int:
    if where:
        key: dict[str, str] = {}
        for item in where:
            name, sep, value = item.partition("=")
            if not sep:
                raise _UserError(f"--where {item!r}: expected NAME=VALUE, e.g. alpha=0.1")
            key[name.strip()] = value
        try:
            removed = reset(store, key)
        except UnknownKeyColumn as exc:
            raise _UserError(str(exc).removeprefix("stet: ")) from None
        return 0 if removed else 1  # 1: no record matched, nothing removed
    if not yes and not sys.stdin.isatty():
        raise _UserError(
            f"refusing to remove {store} without confirmation: pass --yes, or --where "
            "NAME=VALUE to remove one run"
        )
    reset(store, yes=yes)
    return 0


def _import(results: str, key: str, store: str) -> None:
    names = [name.strip() for name in key.split(",") if name.strip()]
    if not names:
        raise _UserError("--key needs at least one column name, e.g. --key alpha,seed")
    for name in names:
        check_name(name, "--key")
    backend = get_backend(store)
    try:
        handle = open(results, newline="", encoding="utf-8-sig")  # noqa: SIM115
    except OSError as exc:
        raise _UserError(f"cannot read {results}: {exc.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        missing = [n for n in names if n not in (reader.fieldnames or [])]
        if missing:
            raise _UserError(
                f"{results} has no column {', '.join(map(repr, missing))}; its columns are: "
                f"{', '.join(reader.fieldnames or [])}"
            )
        keys: list[dict[str, str]] = []
        for number, row in enumerate(reader, 1):
            values = {n: row[n] for n in names}
            if None in values.values():
                raise _UserError(f"{results}, data row {number}: too few fields; nothing imported")
            keys.append(values)
    # Every row was checked first: an import is all or nothing, in one write.
    added = backend.add_many([Identity.of_text(values) for values in keys])
    print(
        f"[stet] Imported {added} runs from {results} into {store} "
        f"({len(keys) - added} already recorded)"
    )


def _run(args: argparse.Namespace) -> int:
    if args.command == "status":
        status(args.store, _grid(args.grid) if args.grid else None)
    elif args.command == "show":
        _show(args.store, args.limit, args.failed)
    elif args.command == "reset":
        return _reset(args.store, args.where, args.yes)
    elif args.command == "import":
        _import(args.results, args.key, args.store)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stet`` command; return its exit code."""
    for stream in (sys.stdout, sys.stderr):
        # A store may hold text the console's code page lacks (Windows): escape it.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = _parser().parse_args(argv)
    try:
        code = _run(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away (``stet show | head``): it has what it wanted.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except _UserError as exc:
        print(f"stet: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, StoreError, ValueError, TypeError, ImportError) as exc:
        text = str(exc)
        print(text if text.startswith("stet:") else f"stet: error: {text}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``stet`` command line: status, show, reset and import for a store."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence

from stet._decorator import DEFAULT_STORE
from stet._errors import StoreError
from stet._identity import Identity, check_name
from stet._utilities import UnknownKeyColumn, _existing, reset, status
from stet.backends import get_backend
from stet.backends._base import utc_now

__all__ = ["main"]


class _UserError(Exception):
    """A mistake on the command line: printed as one line, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    from stet import __version__

    parser = argparse.ArgumentParser(
        prog="stet",
        description="Look at and edit a stet store (which parameter combinations completed).",
    )
    parser.add_argument("--version", action="version", version=f"stet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("status", help="summarise a store")
    p.add_argument("store", nargs="?", default=DEFAULT_STORE)

    p = commands.add_parser("show", help="print the completed runs as a table")
    p.add_argument("store", nargs="?", default=DEFAULT_STORE)
    p.add_argument("--limit", type=int, default=20, help="show the last N runs (0: all)")

    p = commands.add_parser("reset", help="remove one run, or clear the store")
    p.add_argument("store", nargs="?", default=DEFAULT_STORE)
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="remove the run with exactly these key values (repeat for each key)",
    )
    p.add_argument("--yes", action="store_true", help="clear without asking")

    p = commands.add_parser(
        "import", help="mark the runs listed in a CSV file of results as completed"
    )
    p.add_argument("results", help="a CSV file with a header row")
    p.add_argument("--key", required=True, help="comma-separated key columns, e.g. alpha,seed")
    p.add_argument("--store", default=DEFAULT_STORE)
    return parser


def _show(store: str, limit: int) -> None:
    backend = _existing(store)
    rows = backend.rows()
    columns = [*backend.key_columns(), "_stet_timestamp"]
    shown = rows[-limit:] if limit > 0 else rows
    table = [columns] + [
        [*(row.values.get(c, "") for c in columns[:-1]), row.timestamp] for row in shown
    ]
    table = [[cell.replace("\n", "\\n") for cell in line] for line in table]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    if len(shown) < len(rows):
        print(f"({len(shown)} most recent of {len(rows)} runs; --limit 0 shows all)")


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
            f"refusing to clear {store} without confirmation: pass --yes, or --where "
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
    # Every row was checked first: an import is all or nothing.
    added = sum(backend.add(Identity.of_text(values), utc_now()) for values in keys)
    print(
        f"[stet] Imported {added} runs from {results} into {store} "
        f"({len(keys) - added} already recorded)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stet`` command; return its exit code."""
    for stream in (sys.stdout, sys.stderr):
        # A store may hold text the console's code page lacks (Windows): escape it.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = _parser().parse_args(argv)
    try:
        if args.command == "status":
            status(args.store)
        elif args.command == "show":
            _show(args.store, args.limit)
        elif args.command == "reset":
            return _reset(args.store, args.where, args.yes)
        elif args.command == "import":
            _import(args.results, args.key, args.store)
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
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

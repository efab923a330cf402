"""What the database stores (SQLite, PostgreSQL) share: the key column and its checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from stet.backends._index import digests_of_bytes

__all__ = ["KEY", "check_columns", "keys_to_index", "quote"]

#: Hex digest of the run (32 characters), indexed: a lookup is one index probe.
KEY = "_stet_key"


def quote(name: str) -> str:
    """A column name quoted for SQL."""
    return '"' + name.replace('"', '""') + '"'


def check_columns(
    columns: Sequence[str], own: Sequence[str], bad: Callable[[str], Exception]
) -> None:
    """Refuse a records table stet did not write (or a newer stet did)."""
    if "_stet_timestamp" not in columns:
        raise bad(
            f"its records table has no _stet_timestamp column ({', '.join(columns)}), so stet "
            "did not write it"
        )
    for name in columns:
        if name.startswith("_stet_") and name not in own:
            raise bad(f"unknown column {name!r} (written by a newer stet?)")
        if not name.startswith("_stet_") and not name.isidentifier():
            raise bad(f"column {name!r} is not a parameter name")


def keys_to_index(text: str) -> dict[int, None]:
    """The digests in a concatenation of 32-character hex keys, as index keys.

    One conversion of the whole text and a reinterpretation of its bytes, rather than
    a million ``int(key, 16)`` calls.
    """
    data = bytes.fromhex(text)
    if len(data) % 16:
        return dict.fromkeys(int(text[i : i + 32], 16) for i in range(0, len(text), 32))
    return digests_of_bytes(data)

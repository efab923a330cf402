"""What the index snapshot of a Parquet store notes of its file, and when that still fits.

A fold that appends a row group keeps every byte before it, so a snapshot names the
bytes it covers by their length, their SHA-256, how many row groups they hold and their
row count. A later process trusts the snapshot only while the file still starts with
exactly those bytes; then it reads just the row groups after them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from stet._errors import StoreError
from stet.backends._parquetfile import file_layout, groups_end

__all__ = ["base_state", "snapshot_fits"]


def base_state(data: bytes, count: int, known: dict[str, Any] | None) -> dict[str, Any]:
    """What a snapshot notes of the Parquet file ``data``, whose rows number ``count``.

    The SHA-256 of its bytes up to the footer. ``known``, a loaded snapshot's state,
    saves hashing them again when they are the same bytes.
    """
    try:
        end, groups = groups_end(data) if data else (0, 0)
    except (ValueError, OSError):  # (pyarrow's errors; it just read or wrote the file)
        return {"base_count": count}  # no snapshot of it will fit: a full read
    if known and known.get("base_len") == end and known.get("base_groups") == groups:
        digest = known["base"]
    else:
        digest = hashlib.sha256(memoryview(data)[:end]).hexdigest()
    return {"base": digest, "base_len": end, "base_groups": groups, "base_count": count}


def snapshot_fits(
    saved: tuple[Any, int, dict[str, Any]] | None,
    data: bytes,
    bad: Callable[[str], StoreError],
) -> int | None:
    """The first row group of the Parquet file ``data`` that the snapshot ``saved`` lacks.

    A snapshot holds the records of the file's first row groups and of the journal's
    first bytes. It fits while the file still starts with the bytes of those row groups,
    unchanged, and they hold as many rows as it says. None: it does not fit, read the
    whole store.
    """
    if saved is None:
        return None
    _, covered, state = saved
    try:
        size, groups, rows = (int(state[k]) for k in ("base_len", "base_groups", "base_count"))
    except (KeyError, ValueError, TypeError):
        return None  # a snapshot from an older stet
    counts = file_layout(data, b"", bad).counts if data else []
    if (
        size > len(data)
        or hashlib.sha256(memoryview(data)[:size]).hexdigest() != state.get("base")
        or groups > len(counts)
        or sum(counts[:groups]) != rows
        or (groups < len(counts) and covered)  # folded since: its journal is gone
    ):
        return None
    return groups

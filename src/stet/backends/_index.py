"""The in-memory index of a file store, and its snapshot beside the store.

The index holds the 128-bit digest of every completed run, as Python ints in a dict
(about 90 bytes a record; a dict holding only ints is never walked by the garbage
collector, a set would be). A call's run is done when its digest is there, or, in a
store that holds such records, its digest without a function name (imports, 0.0.x) or
by text alone.

Reading a million records takes seconds; hashing a file takes a tenth of that. So after
a large read the index is saved to ``<store>.stet-index`` together with the SHA-256 of
the store bytes it covers and of the saved digests themselves. A later process
trusts the snapshot only if the store still starts with exactly those bytes, and reads
just what was appended after them. Any mismatch, truncation or damage means a full read
and a fresh snapshot: the snapshot can make a start faster, never a skip wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import threading
from collections.abc import Callable, Iterable
from itertools import starmap
from typing import Any

from stet._identity import Identity, base
from stet.backends._atomic import atomic_write
from stet.backends._records import CellPlan, Row

__all__ = ["Index", "Snapshot", "digests_of_bytes"]

_MAGIC = b"STETIDX\x04"  # \x04: digests in 16 big-endian bytes, with their own hash
#: Records from which a full read is worth saving as a snapshot.
SNAPSHOT_MIN = 20_000
_HASH_IN_THREAD = 8 << 20  # bytes of store from which the hash runs beside the conversion


class Index:
    """Digests of completed runs, and which kinds of record are among them."""

    __slots__ = ("digests", "funcs", "plain", "text", "text_func")

    def __init__(self) -> None:
        self.digests: dict[int, None] = {}
        self.funcs: dict[str | None, int] = {}  # records per function name
        self.plain = False  # typed records without a function name
        self.text = False  # records matched by text alone, without a function name
        self.text_func = False  # ... with a function name

    def __len__(self) -> int:
        return len(self.digests)

    def has(self, ident: Any) -> bool:
        """Whether the run ``ident`` (an `Identity` or a grid point) completed."""
        digests = self.digests
        if ident.digest in digests:
            return True
        if self.plain and ident.plain in digests:
            return True
        if self.text and ident.legacy in digests:
            return True
        if self.text_func and ident.func is not None:
            return ident.legacy ^ base(None, True) ^ base(ident.func, True) in digests
        return False

    def note(self, func: str | None, by_text: bool) -> None:
        """Remember that records of this kind are among the digests."""
        if func is None:
            if by_text:
                self.text = True
            else:
                self.plain = True
        elif by_text:
            self.text_func = True

    def add_identity(self, ident: Identity) -> None:
        """Add a run recorded now."""
        self.digests[ident.digest] = None
        self.funcs[ident.func] = self.funcs.get(ident.func, 0) + 1
        if ident.func is None or ident.is_text:
            self.note(ident.func, ident.is_text)

    def add_records(self, records: Iterable[tuple[Any, CellPlan, str]]) -> int:
        """Add validated records (see ``read_records``); return how many."""
        digests = self.digests
        counts: dict[int, tuple[CellPlan, int]] = {}
        last: CellPlan | None = None
        run = n = 0
        for cells, plan, _ in records:
            digests[plan.digest(cells)] = None
            if plan is not last:
                if last is not None:
                    counts[id(last)] = (last, counts.get(id(last), (last, 0))[1] + run)
                last, run = plan, 0
            run += 1
            n += 1
        if last is not None:
            counts[id(last)] = (last, counts.get(id(last), (last, 0))[1] + run)
        for plan, count in counts.values():
            self.note(plan.func, plan.by_text)
            self.funcs[plan.func] = self.funcs.get(plan.func, 0) + count
        return n

    def add_rows(self, rows: Iterable[Row]) -> None:
        """Add stored rows."""
        for row in rows:
            self.digests[row.digest()] = None
            self.funcs[row.func] = self.funcs.get(row.func, 0) + 1
            if row.func is None or row.by_text:
                self.note(row.func, row.by_text)

    def kinds(self) -> dict[str, Any]:
        """The kind flags and counts per function, for a snapshot."""
        return {
            "plain": self.plain,
            "text": self.text,
            "text_func": self.text_func,
            "funcs": [[func, n] for func, n in self.funcs.items()],
        }


def digests_of_bytes(data: bytes | memoryview) -> dict[int, None]:
    """Index keys of 128-bit digests given as 16 big-endian bytes each.

    All in C: the pieces cut by ``struct``, each turned into an int by ``from_bytes``
    (twice as fast as joining two 64-bit words per digest in Python).
    """
    return dict.fromkeys(list(starmap(int.from_bytes, struct.iter_unpack("16s", data))))


def _sha256_meanwhile(data: memoryview) -> Callable[[], str]:
    """Start hashing ``data``; the returned function waits for the hex digest.

    hashlib lets go of the GIL while it hashes a large buffer, so a thread hashes the
    store while the caller turns the snapshot's digests into ints: on two cores the
    check costs nearly nothing more than the conversion.
    """
    if len(data) < _HASH_IN_THREAD:
        digest = hashlib.sha256(data).hexdigest()
        return lambda: digest
    found: list[str] = []
    worker = threading.Thread(target=lambda: found.append(hashlib.sha256(data).hexdigest()))
    worker.start()

    def result() -> str:
        worker.join()
        return found[0] if found else ""  # "" matches no saved hash: a full read

    return result


class Snapshot:
    """The saved index of one store: ``<store>.stet-index``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self, data: bytes) -> tuple[Index, int, dict[str, Any]] | None:
        """The saved index if it still matches the store ``data``.

        Returns:
            ``(index, covered, state)``: the index of ``data[:covered]``, and the format
            state saved with it; None when there is no usable snapshot.
        """
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read()
        except OSError:
            return None
        try:
            if raw[:8] != _MAGIC:
                return None
            size = int.from_bytes(raw[8:12], "little")
            header = json.loads(raw[12 : 12 + size])
            covered = int(header["covered"])
            count = int(header["count"])
            body = raw[12 + size :]
            if len(body) != 16 * count or covered > len(data) or covered < 0:
                return None
            if hashlib.sha256(body).hexdigest() != header["digests_sha256"]:
                return None  # damaged digests: one lost could run a run again
            store_hash = _sha256_meanwhile(memoryview(data)[:covered])
            index = Index()
            index.digests = digests_of_bytes(body)
            if store_hash() != header["sha256"]:
                return None  # the store changed under the snapshot: read it all
            index.plain = bool(header["plain"])
            index.text = bool(header["text"])
            index.text_func = bool(header["text_func"])
            index.funcs = {func: int(n) for func, n in header["funcs"]}
            state: dict[str, Any] = header.get("state") or {}
        except (ValueError, KeyError, TypeError):
            return None  # damaged: ignored, and rewritten after the full read
        return index, covered, state

    def save(self, index: Index, data: bytes, covered: int, state: dict[str, Any]) -> None:
        """Save ``index`` as the index of ``data[:covered]``; never fails the caller."""
        body = b"".join([digest.to_bytes(16) for digest in index.digests])
        header = json.dumps(
            {
                "covered": covered,
                "count": len(index.digests),
                "sha256": hashlib.sha256(memoryview(data)[:covered]).hexdigest(),
                "digests_sha256": hashlib.sha256(body).hexdigest(),
                "state": state,
                **index.kinds(),
            }
        ).encode()
        blob = _MAGIC + len(header).to_bytes(4, "little") + header + body
        with contextlib.suppress(OSError, ValueError):
            atomic_write(self.path, blob, durable=False, follow=False)

    def remove(self) -> None:
        """Delete the snapshot (after a rewrite made it useless)."""
        with contextlib.suppress(OSError):
            os.unlink(self.path)

"""What a file format implements for `stet.backends._filestore.FileBackend`.

A format reads records from some offset of its file on (`FileFormat._parse`), writes a
whole file (`_encode`) or the bytes adding records (`_append_bytes`), and tells a cut
append of its own from bytes someone else wrote (`_interrupted`). It never touches the
file itself: locking, writing and every guarantee live in the file store.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stet.backends._records import Record, Row

__all__ = ["FileFormat", "Parsed", "Reread"]


@dataclass
class Parsed:
    """What a format's parser found in a file, or in the bytes appended to it.

    Attributes:
        header: the column names the records' cells follow.
        records: the validated records (iterate once; may be a generator).
        end: absolute offset where complete records end; reading resumes here.
        torn: whether bytes after ``end`` (other than the format's closing text) hold
            an incomplete record.
        state: what the format needs to go on reading and appending (its columns...).
        lines: the line each record starts on, where the format knows it.
    """

    header: list[str]
    records: Iterable[Record]
    end: int
    torn: bool = False
    state: dict[str, Any] = field(default_factory=dict)
    lines: list[int] | None = None


class Reread(Exception):
    """Raised by a format whose appended bytes cannot be read on their own."""


class FileFormat:
    """The byte-level methods of one file format."""

    #: Human name of the format, used in messages.
    format_name = "file"
    #: Whether records need the format's columns declared up front (a CSV header), so
    #: a record with a new column means rewriting the file.
    fixed_columns = True

    def _parse(self, data: bytes, start: int, state: dict[str, Any]) -> Parsed:
        """Parse ``data``, the file's bytes from offset ``start`` on.

        With ``start == 0`` it is the whole file (header included); otherwise it follows
        complete records, and ``state`` is what the earlier parse returned.
        """
        raise NotImplementedError

    def _encode(self, rows: list[Row], state: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """The bytes of a whole file holding ``rows``, and its state."""
        raise NotImplementedError

    def _append_bytes(
        self, rows: list[Row], end: int, state: dict[str, Any]
    ) -> tuple[bytes, int, int, dict[str, Any]]:
        """Bytes adding ``rows``: ``(data, offset to write at, new end of records, state)``."""
        raise NotImplementedError

    def _closing(self, state: dict[str, Any]) -> bytes:
        """Text the format keeps after the last record (the closing bracket of JSON)."""
        return b""

    def _interrupted(self, tail: bytes, state: dict[str, Any]) -> bool:
        """Whether ``tail`` (bytes after the last complete record) is a cut append of stet's."""
        return False

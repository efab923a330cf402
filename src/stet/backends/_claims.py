"""Claims: how cooperating workers agree who runs which parameter combination.

A claim says "this run is being run by host H, process P, call T, until time E unless
renewed". Every store keeps its claims apart from its completed records, so a claim
never reads as a completed run. The rules for when a claim can be taken over live
here, once, for all stores.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stet._identity import Identity

__all__ = ["Claim", "Outcome", "Owner", "SqlClaims", "pid_alive", "this_host"]

_HOST = socket.gethostname()


def this_host() -> str:
    """The host name claims record for this machine."""
    return _HOST


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    if pid <= 0:
        return False
    if os.name == "nt":
        return _windows_pid_alive(pid)  # os.kill(pid, 0) would terminate the process

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return True  # cannot tell (e.g. Windows quirks): assume alive, the lease decides
    return True


def _windows_pid_alive(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined,unused-ignore]
    query_limited_information = 0x1000
    still_active = 259
    handle = kernel32.OpenProcess(query_limited_information, False, pid)
    if not handle:
        # No such process, or one we may not inspect: only the former is dead.
        return bool(kernel32.GetLastError() == 5)  # ERROR_ACCESS_DENIED
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == still_active
    finally:
        kernel32.CloseHandle(handle)


@dataclass(frozen=True)
class Owner:
    """Who holds a claim: host, pid and a token unique to one call."""

    host: str
    pid: int
    token: str

    @classmethod
    def new(cls) -> Owner:
        """An owner for a call about to run in this process."""
        return cls(_HOST, os.getpid(), uuid.uuid4().hex)


@dataclass(frozen=True)
class Claim:
    """A run being run: its key digest (hex), a readable label, owner and lease end.

    Attributes:
        key: hex digest of the run identity.
        run: readable description, e.g. ``alpha=0.1, seed=2``.
        owner: who runs it.
        expires: Unix time after which the claim is void unless renewed.
    """

    key: str
    run: str
    owner: Owner
    expires: float

    def stale(self, now: float | None = None) -> bool:
        """Whether another worker may take this run over.

        True when the lease ran out without a heartbeat, or at once when the owner is a
        process on this host that no longer exists.
        """
        if (now if now is not None else time.time()) > self.expires:
            return True
        return self.owner.host == _HOST and not pid_alive(self.owner.pid)

    def held_by(self, owner: Owner) -> bool:
        """Whether ``owner`` (the same call) holds this claim."""
        return self.owner.token == owner.token

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of this claim."""
        data = asdict(self)
        data.pop("key")
        return data

    @classmethod
    def from_json(cls, key: str, data: dict[str, Any]) -> Claim:
        """The claim of ``key`` stored as ``data`` by `to_json`.

        Raises:
            KeyError, TypeError, ValueError: when ``data`` is not a claim.
        """
        owner = data["owner"]
        return cls(
            key=key,
            run=str(data["run"]),
            owner=Owner(str(owner["host"]), int(owner["pid"]), str(owner["token"])),
            expires=float(data["expires"]),
        )


class Outcome(Enum):
    """The result of trying to claim a run."""

    CLAIMED = "claimed"  # the caller holds the claim now and should run it
    BUSY = "busy"  # another live worker is running it
    DONE = "done"  # it already completed


class SqlClaims:
    """Claims in a SQL table ``(key, run, host, pid, token, expires)``, one open transaction.

    Shared by the database stores; each passes its placeholder style, how it writes
    over an existing row, and how it checks and records completed runs.
    """

    COLUMNS = "key, run, host, pid, token, expires"

    def __init__(
        self,
        conn: Any,
        table: str,
        mark: str,
        upsert: str,
        done: Callable[[Identity], bool],
        record: Callable[[Identity, str], object],
    ) -> None:
        """Wrap ``conn`` (inside a transaction) and the quoted claims ``table``.

        Args:
            conn: a DB-API connection with an ``execute`` method.
            table: the claims table name, quoted for SQL.
            mark: the parameter placeholder, ``?`` or ``%s``.
            upsert: ``INSERT ... `` text that replaces an existing row with the same key,
                with ``{table}`` and ``{values}`` to fill in.
            done: whether a run completed (inside the same transaction).
            record: records a completed run (inside the same transaction).
        """
        self.conn = conn
        self.table = table
        self.mark = mark
        self.upsert = upsert
        self.done = done
        self._record = record

    def get(self, key: str) -> Claim | None:
        row = self.conn.execute(
            f"SELECT {self.COLUMNS} FROM {self.table} WHERE key = {self.mark}", (key,)
        ).fetchone()
        return None if row is None else self.claim_of(row)

    def put(self, claim: Claim) -> None:
        owner = claim.owner
        values = ", ".join([self.mark] * 6)
        self.conn.execute(
            self.upsert.format(table=self.table, values=values),
            (claim.key, claim.run, owner.host, owner.pid, owner.token, claim.expires),
        )

    def delete(self, key: str) -> None:
        self.conn.execute(f"DELETE FROM {self.table} WHERE key = {self.mark}", (key,))

    def all(self) -> list[Claim]:
        rows = self.conn.execute(f"SELECT {self.COLUMNS} FROM {self.table}").fetchall()
        return [self.claim_of(row) for row in rows]

    def record(self, ident: Identity, timestamp: str) -> None:
        self._record(ident, timestamp)

    @staticmethod
    def claim_of(row: tuple[Any, ...]) -> Claim:
        """The claim stored in a table row."""
        key, run, host, pid, token, expires = row
        return Claim(str(key), str(run), Owner(str(host), int(pid), str(token)), float(expires))

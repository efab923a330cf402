"""Claims and ledger of a file store, in side files guarded by the store's lock.

Claims live in ``<store>.claims``, an append-only log of JSON lines: a ``claim`` line
(also written to renew a lease, with the new expiry) and a ``drop`` line when the run
completed or failed. The last line for a run wins. A claim or a completion is one short
append, never a rewrite; the log is compacted to the live claims once it has grown to a
few times their number. The ledger (failures, duplicate executions) is
``<store>.ledger.jsonl``. Lease expiry is judged by this machine's clock: a file store
is shared by processes of one machine.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from stet._identity import Identity
from stet.backends._claims import Claim, Outcome, Owner
from stet.backends._jsonlines import JsonLines
from stet.backends._ledger import FAILURE, RESET, Event, duplicate_event
from stet.backends._records import describe

if TYPE_CHECKING:
    from stet.backends._filestore import FileBackend

__all__ = ["FileClaims"]

_COMPACT_MIN = 256  # log lines before compaction is considered


class FileClaims:
    """The claims and the ledger of one file store (see the module docstring)."""

    def __init__(self, store: FileBackend) -> None:
        self.store = store
        self.log = JsonLines(store.side + ".claims", "claims file")
        self.ledger = JsonLines(store.side + ".ledger.jsonl", "ledger")
        self.forget()

    def forget(self) -> None:
        """Forget what was read (a new process)."""
        self.log.forget()
        self.ledger.forget()
        self._entries: dict[str, dict[str, Any]] = {}
        self._lines = 0
        self._events: list[Event] = []
        self._failures: dict[str, int] = {}

    # -- reading ------------------------------------------------------------------

    def _read(self) -> None:
        """Bring the claims up to date. Caller holds the lock."""
        fresh, items = self.log.read_new()
        if fresh:
            self._entries = {}
            self._lines = 0
        for item in items:
            self._lines += 1
            _apply(self._entries, item)

    def _claim_of(self, key: str, now: float) -> Claim | None:
        item = self._entries.get(key)
        if item is None:
            return None
        try:
            expires = float(item["expires"])
            since = item.get("since")
            return Claim(
                key,
                str(item["run"]),
                Owner.from_json(item["owner"]),
                expires,
                int(item.get("gen", 1)),
                expired=expires < now,
                since=None if since is None else float(since),
            )
        except (KeyError, TypeError, ValueError):
            return None  # a damaged line claims nothing

    def _all(self) -> list[Claim]:
        now = time.time()
        found = (self._claim_of(key, now) for key in list(self._entries))
        return [c for c in found if c is not None]

    # -- writing --------------------------------------------------------------------

    def _write(self, items: list[dict[str, Any]]) -> None:
        """Append ``items`` to the log, or rewrite it with the live claims once it is long."""
        if self._lines >= _COMPACT_MIN and self._lines > 4 * len(self._entries):
            entries = dict(self._entries)
            for item in items:
                _apply(entries, item)
            self.log.rewrite(list(entries.values()))
            self._read()  # the rewritten log, from its start
            return
        self.log.append(items, self.store.file)
        for item in items:  # what this process wrote, it need not read back
            self._lines += 1
            _apply(self._entries, item)

    @staticmethod
    def _line(
        key: str, ident: Identity, owner: Owner, lease: float, gen: int, since: float | None
    ) -> dict[str, Any]:
        now = time.time()
        return {
            "op": "claim",
            "key": key,
            "run": describe(ident),
            "owner": owner.to_json(),
            "expires": now + lease,
            "gen": gen,
            "since": now if since is None else since,
        }

    # -- the claims API -------------------------------------------------------------

    def claim(self, ident: Identity, owner: Owner, lease: float) -> tuple[Outcome, Claim | None]:
        """See `BaseBackend.claim`."""
        self.store._prepare_write()

        def attempt() -> tuple[Outcome, Claim | None]:
            self.store._refresh()
            if self.store._index.has(ident):
                return Outcome.DONE, None
            self._read()
            key = f"{ident.digest:032x}"
            current = self._claim_of(key, time.time())
            if current is not None and not current.held_by(owner) and not current.stale():
                return Outcome.BUSY, current
            since = None
            gen = 1
            if current is not None:
                mine = current.held_by(owner)
                since = current.since if mine else None
                gen = current.generation + (not mine)
            line = self._line(key, ident, owner, lease, gen, since)
            self._write([line])
            return Outcome.CLAIMED, self._claim_of(key, time.time())

        result: tuple[Outcome, Claim | None] = self.store._locked(attempt)
        return result

    def renew(self, held: Sequence[tuple[Identity, Owner, float]]) -> list[Identity]:
        """See `BaseBackend.renew`."""

        def attempt() -> list[Identity]:
            self._read()
            lost: list[Identity] = []
            lines: list[dict[str, Any]] = []
            for ident, owner, lease in held:
                key = f"{ident.digest:032x}"
                current = self._claim_of(key, time.time())
                if current is None or not current.held_by(owner):
                    lost.append(ident)
                else:
                    line = self._line(key, ident, owner, lease, current.generation, current.since)
                    lines.append(line)
            if lines:
                self._write(lines)
            return lost

        result: list[Identity] = self.store._locked(attempt)
        return result

    def release(self, ident: Identity, owner: Owner) -> None:
        """See `BaseBackend.release`."""

        def attempt() -> None:
            self._read()
            key = f"{ident.digest:032x}"
            current = self._entries.get(key)
            if current is not None and current.get("owner", {}).get("token") == owner.token:
                self._write([{"op": "drop", "key": key, "token": owner.token}])

        self.store._locked(attempt)

    def complete(
        self, ident: Identity, owner: Owner, extra: Mapping[str, str] | None = None
    ) -> bool:
        """See `BaseBackend.complete`."""
        self.store._prepare_write()

        def attempt() -> bool:
            added = self.store._add_locked([ident], extra) > 0
            self._read()
            key = f"{ident.digest:032x}"
            current = self._claim_of(key, time.time())
            generation = current.generation if current is not None else 1
            if current is not None and current.held_by(owner):
                self._write([{"op": "drop", "key": key, "token": owner.token}])
            if not added:
                self._note(duplicate_event(ident, generation, extra))
            return added

        result: bool = self.store._locked(attempt)
        return result

    def live(self) -> list[Claim]:
        """The claims whose worker is alive and whose lease has not run out."""
        if not self.log.exists():
            return []  # no worker ever claimed a run here: no need to lock

        def read() -> list[Claim]:
            self._read()
            return [c for c in self._all() if not c.stale()]

        found: list[Claim] = self.store._locked(read)
        return found

    def busy(self, owner: Owner | None) -> set[int]:
        """Digests of runs held by live claims other than ``owner``'s."""
        return {int(c.key, 16) for c in self.live() if owner is None or not c.held_by(owner)}

    # -- the ledger -----------------------------------------------------------------

    def _read_ledger(self) -> None:
        fresh, items = self.ledger.read_new()
        if fresh:
            self._events = []
            self._failures = {}
        for item in items:
            try:
                self._count(Event.from_dict(item))
            except (KeyError, TypeError, ValueError):
                continue  # a line of a newer stet, or damaged: not an event we know

    def _count(self, event: Event) -> None:
        self._events.append(event)
        if event.kind == FAILURE:
            self._failures[event.key] = self._failures.get(event.key, 0) + 1
        elif event.kind == RESET:
            self._failures.pop(event.key, None)

    def _note(self, event: Event) -> None:
        """Append ``event``. Caller holds the lock."""
        self._read_ledger()
        self.ledger.append([event.to_dict()], self.store.file)
        self._count(event)

    def note(self, event: Event) -> None:
        """See `BaseBackend.note`."""
        self.store._prepare_write()
        self.store._locked(lambda: self._note(event))

    def events(self) -> list[Event]:
        """See `BaseBackend.events`."""
        if not self.ledger.exists():
            return []

        def read() -> list[Event]:
            self._read_ledger()
            return list(self._events)

        found: list[Event] = self.store._locked(read)
        return found

    def failures(self, key: str) -> int:
        """Failures of the run with digest ``key`` since it was last reset."""
        if not self.ledger.exists():
            return 0

        def read() -> int:
            self._read_ledger()
            return self._failures.get(key, 0)

        count: int = self.store._locked(read)
        return count


def _apply(entries: dict[str, dict[str, Any]], item: dict[str, Any]) -> None:
    """Apply one log line to the claims by key: a claim replaces, a drop removes."""
    key = item.get("key")
    if not isinstance(key, str):
        return
    if item.get("op") == "claim":
        entries[key] = item
    elif item.get("op") == "drop":
        current = entries.get(key)
        if current is not None and current.get("owner", {}).get("token") == item.get("token"):
            del entries[key]

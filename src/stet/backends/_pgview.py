"""What a PostgreSQL worker knows of the other workers' claims, one query at a time.

Workers that walk the same grid in the same order would each ask the server about
every run that another worker has just claimed or finished. Instead each process keeps
a view of the claims table's recent changes (every claim, completion and release bumps
a sequence number): one query returns what changed since the last, and a run the view
shows as done, or as held by a live claim of another worker, is skipped without asking.
The view is at most a moment old; the server still decides every claim it is asked for.
"""

from __future__ import annotations

import time
from typing import Any

from stet.backends._claims import Claim, Outcome, Owner

__all__ = ["View"]

#: Seconds a view is trusted before it is brought up to date.
FRESH = 0.05
#: Changes kept (the newest), so a long sweep does not grow the view without end.
KEEP = 100_000


class View:
    """The recent changes to one store's claims, as this process last saw them."""

    def __init__(self) -> None:
        self.seq = 0
        self.at = -1e9  # when it was brought up to date (time.monotonic)
        self.runs: dict[str, tuple[Owner, float]] = {}  # key: holder (token "" done), until

    def stale(self) -> bool:
        """Whether it is time to ask the server for the changes."""
        return time.monotonic() - self.at > FRESH

    def update(self, rows: list[tuple[Any, ...]]) -> None:
        """Take in ``(seq, key, token, host, place, pid, started, seconds left)`` rows."""
        now = time.monotonic()
        runs = self.runs
        for seq, key, token, host, place, pid, started, left in rows:
            runs.pop(key, None)  # re-inserted: the dict keeps the newest last
            holder = Owner(host or "", place or "", int(pid or 0), int(started or 0), token)
            runs[key] = (holder, now + float(left))
            self.seq = max(self.seq, int(seq))
        while len(runs) > KEEP:
            del runs[next(iter(runs))]
        self.at = now

    def answer(self, key: str, owner: Owner) -> tuple[Outcome, Claim | None] | None:
        """DONE or BUSY when the view already knows, else None (ask the server)."""
        found = self.runs.get(key)
        if found is None:
            return None
        holder, until = found
        if holder.token == "":
            return Outcome.DONE, None
        if holder.token in ("-", owner.token) or time.monotonic() >= until or holder.dead():
            return None  # free, ours, expired or its process ended: the server decides
        return Outcome.BUSY, Claim(key, "", holder, time.time() + until - time.monotonic())

    def forget(self) -> None:
        """Ask the server next time (a claim attempt found the view behind)."""
        self.at = -1e9

"""Claims: how cooperating workers agree who runs which parameter combination.

A claim says "this run is being run by process P of machine M, call T, until time E
unless renewed". Every store keeps its claims apart from its completed records, so a
claim never reads as a completed run. A claim carries a generation that rises each time
another worker takes it over; the rules for a takeover live here, once, for all stores.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Any

from stet.backends._liveness import alive, this_place, this_process
from stet.backends._records import HOSTNAME

__all__ = ["Claim", "Outcome", "Owner"]


@dataclass(frozen=True)
class Owner:
    """Who holds a claim: a process (host, place, pid, start time) and one call's token.

    Attributes:
        host: the host name, for people reading ``status``.
        place: where the pid means something: host, boot and pid namespace.
        pid: the process id.
        started: the process start time (0 where unknown), so a reused pid is told apart.
        token: unique to one call.
    """

    host: str
    place: str
    pid: int
    started: int
    token: str

    @classmethod
    def new(cls) -> Owner:
        """An owner for a call about to run in this process."""
        pid, started = this_process()
        return cls(HOSTNAME, this_place(), pid, started, uuid.uuid4().hex)

    def dead(self) -> bool:
        """Whether this owner's process is known to have ended (judged locally only)."""
        return alive(self.place, self.pid, self.started) is False

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "host": self.host,
            "place": self.place,
            "pid": self.pid,
            "started": self.started,
            "token": self.token,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Owner:
        """The owner stored by `to_json`.

        Raises:
            KeyError, TypeError, ValueError: when ``data`` is not an owner.
        """
        return cls(
            str(data["host"]),
            str(data["place"]),
            int(data["pid"]),
            int(data["started"]),
            str(data["token"]),
        )


@dataclass(frozen=True)
class Claim:
    """A run being run.

    Attributes:
        key: hex digest of the run identity.
        run: readable description, e.g. ``alpha=0.1, seed=2``.
        owner: who runs it.
        expires: when the lease ends unless renewed, in the store's clock (seconds).
        generation: 1 for a fresh claim, one more for each takeover.
        expired: whether the lease had run out when the claim was read (judged by the
            store's clock where the store has one).
        since: when its worker took the claim (the store's clock, seconds), if known.
    """

    key: str
    run: str
    owner: Owner
    expires: float
    generation: int = 1
    expired: bool = False
    since: float | None = None

    def stale(self) -> bool:
        """Whether another worker may take this run over.

        True when the lease ran out without a heartbeat, or at once when the owner is a
        process on this machine (same pid namespace) that no longer runs.
        """
        return self.expired or self.owner.dead()

    def held_by(self, owner: Owner) -> bool:
        """Whether ``owner`` (the same call) holds this claim."""
        return self.owner.token == owner.token


class Outcome(Enum):
    """The result of trying to claim a run."""

    CLAIMED = "claimed"  # the caller holds the claim now and should run it
    BUSY = "busy"  # another live worker is running it
    DONE = "done"  # it already completed

"""The ledger: what happened to runs besides completing (failures, duplicate executions).

A store's ledger is kept apart from its completed records (for a file store,
``<store>.ledger.jsonl``, one JSON object per line; for a database, a table of its own),
so that no reader of the store, stet or pandas, ever takes a failure for a completed
run.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stet.backends._records import HOSTNAME, this_job, utc_now

if TYPE_CHECKING:
    from stet._identity import Identity

__all__ = ["DUPLICATE", "FAILURE", "RESET", "Event", "duplicate_event", "failure_event"]

#: A call that raised: the run stays to do.
FAILURE = "failure"
#: A run whose body completed a second time after its claim was taken over.
DUPLICATE = "duplicate"
#: ``f.reset(...)`` of a run: its failures before this no longer count.
RESET = "reset"


@dataclass(frozen=True)
class Event:
    """One entry of a store's ledger.

    Attributes:
        kind: `FAILURE`, `DUPLICATE` or `RESET`.
        key: hex digest of the run (as ``_stet_key``).
        run: the run's key texts by parameter name.
        types: the run's ``_stet_types`` cell.
        func: the function name.
        timestamp: when it happened (UTC, ISO 8601).
        details: what else is known: ``error``, ``traceback``, ``attempt``, ``host``,
            ``job``, ``duration``, ``generation``.
    """

    kind: str
    key: str
    run: dict[str, str]
    types: str
    func: str | None
    timestamp: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dict (one line of a ledger file)."""
        return {
            "event": self.kind,
            "key": self.key,
            "run": self.run,
            "types": self.types,
            "func": self.func,
            "timestamp": self.timestamp,
            **self.details,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        """The event of one parsed ledger line.

        Raises:
            KeyError, TypeError, ValueError: when ``data`` is not an event.
        """
        rest = dict(data)
        run = rest.pop("run")
        if not isinstance(run, dict) or not all(isinstance(v, str) for v in run.values()):
            raise TypeError("run is not an object of texts")
        func = rest.pop("func")
        return cls(
            kind=str(rest.pop("event")),
            key=str(rest.pop("key")),
            run=run,
            types=str(rest.pop("types")),
            func=None if func is None else str(func),
            timestamp=str(rest.pop("timestamp")),
            details=rest,
        )


def _event(kind: str, ident: Identity, details: dict[str, Any] | None = None) -> Event:
    return Event(
        kind,
        f"{ident.digest:032x}",
        ident.as_dict(),
        ident.types,
        ident.func,
        utc_now(),
        details or {},
    )


def failure_event(ident: Identity, error: BaseException, attempt: int, seconds: float) -> Event:
    """The event of a call of ``ident`` that raised ``error`` after ``seconds``."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        message = f"{type(error).__name__}: {error}"
    except Exception:  # its __str__ failed: the type still says what happened
        message = f"{type(error).__name__}: <the exception's message could not be made>"
    return _event(
        FAILURE,
        ident,
        {
            "error": message[:1000],
            "traceback": text[-2000:],  # the tail: where it failed
            "attempt": attempt,
            "host": HOSTNAME,
            "job": this_job(),
            "duration": round(seconds, 6),
        },
    )


def duplicate_event(ident: Identity, generation: int, extra: Mapping[str, str] | None) -> Event:
    """The event of a run whose body completed again after its claim was taken over."""
    details: dict[str, Any] = {"generation": generation}
    if extra:
        details.update(extra)
    return _event(DUPLICATE, ident, details)


def reset_event(ident: Identity) -> Event:
    """The event of ``f.reset(...)``: earlier failures of the run stop counting."""
    return _event(RESET, ident)

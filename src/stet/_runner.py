"""What ``once`` knows about one decorated function, and what one call does.

A `Runner` binds a call to its run (`stet._binding`), asks the store whether it is done,
claims it when workers cooperate, and hands the call a `stet._claiming.Call` that
records it, or notes its failure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stet._binding import Binder
from stet._claiming import Call, extra_of
from stet._grid import Pending
from stet._identity import check_func_name
from stet._messages import Reporter
from stet.backends import BaseBackend, open_store
from stet.backends._claims import Outcome, Owner
from stet.backends._ledger import reset_event

__all__ = ["Runner"]


class Runner:
    """What ``once`` knows about one decorated function.

    It pickles as its configuration; the store is opened again in the process that
    unpickles it.
    """

    def __init__(self, func: Callable[..., Any], options: dict[str, Any]) -> None:
        self.options = options
        self.func = func
        lease = float(options["lease"])
        if not lease > 0:
            raise ValueError(f"stet: lease must be a positive number of seconds, got {lease!r}")
        attempts = options["max_attempts"]
        if attempts is not None and (not isinstance(attempts, int) or attempts < 1):
            raise ValueError(f"stet: max_attempts must be a positive int, got {attempts!r}")
        self.lease = lease
        self.claim = bool(options["claim"])
        self.max_attempts: int | None = attempts
        self.store: str = options["store"]
        qualname = getattr(func, "__qualname__", getattr(func, "__name__", repr(func)))
        default_name = qualname.rsplit("<locals>.", 1)[-1]  # "Model.fit", not "main.<locals>..."
        self.name = check_func_name(options["name"] or default_name)
        # Kept with the configuration: a copy unpickled elsewhere records the same name.
        self.options = {**options, "name": self.name}
        self.binder = Binder(func, self.name, options["key"], options["ignore"])
        self.meta = extra_of(options["meta"])
        self.reporter = Reporter(self.name, options["quiet"])
        self.backend: BaseBackend = open_store(self.store)

    def __getstate__(self) -> dict[str, Any]:
        return {"func": self.func, "options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["func"], state["options"])  # type: ignore[misc]

    def begin(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
        """Decide whether a call runs: None to skip it, else the run to wrap it in."""
        ident = self.binder.identity(args, kwargs)
        backend = self.backend
        reporter = self.reporter
        if not reporter.announced:
            reporter.first_call(backend.location, lambda: backend.count(self.name))
        # With claims on a server, the claim itself says whether the run is done: one
        # round trip instead of two.
        if (not self.claim or backend.cheap_lookups) and backend.contains(ident):
            reporter.skipped(ident)
            return None
        attempt = None  # without max_attempts, counted only when the call fails
        if self.max_attempts is not None:
            failures = backend.failures(ident)
            if failures >= self.max_attempts:
                reporter.skipped(
                    ident,
                    why=f"it failed {failures} times (max_attempts={self.max_attempts}); "
                    f"{self.name}.reset(...) lets it run again",
                )
                return None
            attempt = failures + 1
        backend.check_writable()  # before the body: an unwritable store costs no run
        if not self.claim:
            return Call(backend, ident, None, self.lease, self.meta, reporter, attempt)
        owner = Owner.new()
        outcome, current = backend.claim(ident, owner, self.lease)
        if outcome is Outcome.DONE:
            reporter.skipped(ident)
            return None
        if outcome is Outcome.BUSY:
            reporter.skipped(ident, busy=current)
            return None
        return Call(backend, ident, owner, self.lease, self.meta, reporter, attempt)

    def reset(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        ident = self.binder.identity(args, kwargs)
        backend = self.backend
        targets = {ident.digest, ident.plain, ident.legacy}
        removed = backend.discard(lambda row: row.digest() in targets)
        try:
            if backend.failures(ident):
                backend.note(reset_event(ident))
        except NotImplementedError:
            pass
        return bool(removed)

    def pending(self, grid: Any) -> Pending:
        busy = self.backend.busy() if self.claim else None
        return Pending(self.binder, self.backend, grid, busy)

    def describe(self) -> str:
        backend = self.backend
        try:
            done = f"{backend.count(self.name) or 0:,} completed"
        except Exception:
            done = "store unreadable"
        return (
            f"<stet.once {self.name}({', '.join(self.binder.key)}) store={backend.location} {done}>"
        )

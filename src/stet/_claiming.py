"""Running one call: record it on success, note it on failure, keep its claim alive.

A `Call` wraps the body of a decorated function that is going ahead. With claims
(``once(claim=True)``) one heartbeat thread per process renews the leases of every
claim the process holds, every third of the shortest lease, in one step per store.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stet._identity import Identity
from stet._messages import say
from stet.backends._claims import Owner
from stet.backends._ledger import failure_event
from stet.backends._records import DURATION, HOST, HOSTNAME, JOB, META, describe, this_job

if TYPE_CHECKING:
    from stet.backends import BaseBackend

__all__ = ["Call", "heartbeat"]


class Call:
    """One run going ahead: how it started, and what to write when it ends."""

    __slots__ = ("attempt", "backend", "ident", "lease", "meta", "owner", "reporter", "started")

    def __init__(
        self,
        backend: BaseBackend,
        ident: Identity,
        owner: Owner | None,
        lease: float,
        meta: str | None,
        reporter: Any,
        attempt: int | None = None,
    ) -> None:
        self.backend = backend
        self.ident = ident
        self.owner = owner
        self.lease = lease
        self.meta = meta
        self.reporter = reporter
        self.attempt = attempt
        self.started = time.perf_counter()
        if owner is not None:
            heartbeat.hold(backend, ident, owner, lease)

    def _extra(self) -> dict[str, str]:
        extra = {
            DURATION: f"{time.perf_counter() - self.started:.6f}",
            HOST: HOSTNAME,
        }
        job = this_job()
        if job:
            extra[JOB] = job
        if self.meta:
            extra[META] = self.meta
        return extra

    def succeeded(self) -> None:
        """The body returned: record the run (and drop its claim)."""
        try:
            if self.owner is None:
                self.backend.add(self.ident, self._extra())
            else:
                self.backend.complete(self.ident, self.owner, self._extra())
        finally:
            if self.owner is not None:
                heartbeat.drop(self.backend, self.owner)
        self.reporter.ran += 1

    def failed(self, error: BaseException) -> None:
        """The body raised: release the claim and note the failure (never a record)."""
        if self.owner is not None:
            heartbeat.drop(self.backend, self.owner)
        owner = self.owner
        if not isinstance(error, Exception):
            # KeyboardInterrupt, SystemExit: the run was stopped, it did not fail.
            if owner is not None:
                self._quietly(lambda: self.backend.release(self.ident, owner))
            return
        self.reporter.failed += 1
        seconds = time.perf_counter() - self.started
        if owner is not None:
            self._quietly(lambda: self.backend.release(self.ident, owner))
        self._quietly(lambda: self.backend.note(self._failure(error, seconds)))

    def _failure(self, error: Exception, seconds: float) -> Any:
        """The ledger event of this failure (its attempt counted now, if not known yet)."""
        attempt = self.attempt
        if attempt is None:
            attempt = self.backend.failures(self.ident) + 1
        return failure_event(self.ident, error, attempt, seconds)

    def _quietly(self, action: Any) -> None:
        # The body's own exception is what the caller must see; a store problem while
        # cleaning up after it is reported, never raised over it.
        try:
            action()
        except NotImplementedError:
            pass
        except Exception as exc:
            warnings.warn(f"stet: {exc}", RuntimeWarning, stacklevel=3)


class _Heartbeat:
    """The one thread per process that renews the leases of the claims it holds."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start with no claims and no thread (a new process, or a forked child)."""
        self._lock = threading.Lock()
        self._held: dict[tuple[int, str], tuple[BaseBackend, Identity, Owner, float]] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned: set[str] = set()

    def hold(self, backend: BaseBackend, ident: Identity, owner: Owner, lease: float) -> None:
        """Keep renewing ``owner``'s claim on ``ident`` until `drop`."""
        with self._lock:
            self._held[(id(backend), owner.token)] = (backend, ident, owner, lease)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="stet-heartbeat", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def drop(self, backend: BaseBackend, owner: Owner) -> None:
        """Stop renewing a claim (the run ended)."""
        with self._lock:
            self._held.pop((id(backend), owner.token), None)

    def _run(self) -> None:
        last = time.monotonic()
        while True:
            with self._lock:
                held = list(self._held.values())
            if not held:
                self._wake.clear()
                self._wake.wait(5.0)
                with self._lock:
                    if not self._held:
                        self._thread = None
                        return
                continue
            # Every third of the shortest lease held; a new claim wakes the thread only
            # to look at its lease (claims start with a full lease).
            left = last + min(lease for *_, lease in held) / 3 - time.monotonic()
            if left > 0:
                self._wake.clear()
                self._wake.wait(left)
                continue
            self.beat()
            last = time.monotonic()

    def beat(self) -> None:
        """Renew every held claim now, one step per store; warn about claims lost."""
        with self._lock:
            held = list(self._held.values())
        by_store: dict[int, list[tuple[BaseBackend, Identity, Owner, float]]] = {}
        for entry in held:
            by_store.setdefault(id(entry[0]), []).append(entry)
        for entries in by_store.values():
            backend = entries[0][0]
            try:
                lost = backend.renew([(ident, owner, lease) for _, ident, owner, lease in entries])
            except Exception:
                continue
            for ident in lost:
                owners = [o for _, i, o, _ in entries if i is ident]
                for owner in owners:
                    self._lost(backend, ident, owner)

    def _lost(self, backend: BaseBackend, ident: Identity, owner: Owner) -> None:
        """Say once that a claim of this process is gone; stop renewing it."""
        self.drop(backend, owner)
        if owner.token in self._warned:
            return
        self._warned.add(owner.token)
        run = f"{ident.func or ''}({describe(ident, limit=60)})"
        text = (
            f"[stet] Lost the claim on {run} in {backend.location}: its lease ran out and "
            "another worker took it over. This run may be executed twice; its record is "
            "written once."
        )
        warnings.warn(text.removeprefix("[stet] "), RuntimeWarning, stacklevel=1)
        say(text)


#: The heartbeat of this process.
heartbeat = _Heartbeat()

if hasattr(os, "register_at_fork"):
    # A forked child holds none of its parent's claims, and has no heartbeat thread.
    os.register_at_fork(after_in_child=lambda: heartbeat.reset())


def extra_of(meta: Mapping[str, Any] | None) -> str | None:
    """The ``_stet_meta`` cell for ``once(meta=...)``: JSON text, keys sorted."""
    if not meta:
        return None
    import json

    return json.dumps(meta, sort_keys=True, default=str, ensure_ascii=False)

"""The interface every store implements, and the public API built on it once.

A store implements a small set of methods (`BaseBackend` lists them as abstract):
the decorator's hot path (`contains`, `add`), reading and removing records (`rows`,
`discard`, `drop`), the claims of cooperating workers and the ledger of failures. The
public methods ``has``, ``record``, ``load``, ``remove`` and ``clear`` (stet 0.0.x's
API) are written here in terms of them.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from stet._identity import Identity, canonical, check_name, identity_of, parse_types
from stet.backends._claims import Claim, Outcome, Owner
from stet.backends._index import Index
from stet.backends._ledger import Event
from stet.backends._locking import forks
from stet.backends._records import Row

__all__ = ["BaseBackend", "Lookup"]


class Lookup(Protocol):
    """What a lookup needs of a run: its digests (see `stet._identity.Identity`)."""

    @property
    def digest(self) -> int:
        """The digest of the run's own record."""
        ...

    @property
    def plain(self) -> int:
        """The digest of the run recorded without a function name."""
        ...

    @property
    def legacy(self) -> int:
        """The digest of the run matched by text alone."""
        ...

    @property
    def func(self) -> str | None:
        """The function name the run belongs to."""
        ...


def row_matches(row: Row, key: Mapping[str, Any]) -> bool:
    """Whether ``row`` records exactly the key ``key`` (same names, equal values).

    A ``str`` value in ``key`` matches by text alone, so ``{"alpha": "0.1"}`` (as 0.0.x
    docs taught) finds the run of ``alpha=0.1``; any other value must also have the same
    type family as the recorded one.
    """
    if row.values.keys() != key.keys():
        return False
    tags: dict[str, str] = {}
    if row.types is not None:
        names, tag_list = parse_types(row.types)
        tags = dict(zip(names, tag_list, strict=True))
    for name, value in key.items():
        if isinstance(value, str):
            if row.values[name] != value:
                return False
            continue
        tag, text = canonical(value)
        if row.values[name] != text or tags.get(name, "text") not in (tag, "text"):
            return False
    return True


class BaseBackend(ABC):
    """A store of completed runs.

    A backend pickles as its configuration only; locks, connections and caches are
    rebuilt in the process that uses it (also after a fork).

    Attributes:
        path: the store file (a `pathlib.Path`); for a server, its URL.
    """

    #: File name endings this backend serves (``".csv"``), used by ``get_backend``.
    suffixes: tuple[str, ...] = ()
    #: Human name of the format, used in messages.
    format_name = "store"
    #: Whether `contains` is cheap next to a claim (a local file, not a round trip).
    cheap_lookups = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.file = os.fspath(path)
        self.path: Any = Path(self.file)
        self._forks = -1

    # -- per-process state -------------------------------------------------------

    def _ensure_process(self) -> None:
        """Rebuild process-local state when first used, or used after a fork."""
        if self._forks != forks():
            # Mark the state built only once it is: an interrupt inside
            # _start_process leaves it to be built again by the next call.
            self._start_process()
            self._forks = forks()

    @abstractmethod
    def _start_process(self) -> None:
        """Create locks, connections and caches for the current process."""

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.file}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"

    @property
    def location(self) -> str:
        """Where the store is, safe to print (a URL without its password)."""
        return self.file

    # -- the interface each store implements -------------------------------------

    @abstractmethod
    def exists(self) -> bool:
        """Whether the store exists yet (it is created on the first record)."""

    @abstractmethod
    def contains(self, ident: Lookup) -> bool:
        """Whether the run ``ident`` is recorded as completed."""

    def completed(self, idents: Sequence[Lookup]) -> list[bool]:
        """For each run, whether it completed (stores may batch the lookups)."""
        return [self.contains(ident) for ident in idents]

    @abstractmethod
    def add(self, ident: Identity, extra: Mapping[str, str] | None = None) -> bool:
        """Record a completed run now; False if it was already recorded.

        Args:
            ident: the run.
            extra: stet's other columns for it (``_stet_duration``, ``_stet_host``, ...).
        """

    def add_many(self, idents: Sequence[Identity]) -> int:
        """Record many completed runs at once (``stet import``); return how many were new."""
        return sum(self.add(ident) for ident in idents)

    @abstractmethod
    def rows(self) -> list[Row]:
        """Every completed run, in the order recorded."""

    @abstractmethod
    def discard(self, predicate: Callable[[Row], bool]) -> list[Row]:
        """Remove every row for which ``predicate`` is true; return the removed rows."""

    @abstractmethod
    def drop(self) -> None:
        """Remove the whole store and its ledger, as ``stet.reset(store)`` does.

        The file (a symbolic link's target is emptied instead), or the database's
        records table. Claims of running workers stay.
        """

    @abstractmethod
    def check_writable(self) -> None:
        """Raise `StoreError` now if a completed run could not be recorded.

        Called before the first body runs, so an unwritable store never costs a run.
        """

    def count(self, func: str | None = None) -> int | None:
        """Records that count as runs of ``func`` (all records if None); None if no store.

        A record that names no function (imported, or written by stet 0.0.x) counts as a
        run of every function, as it does when a call is looked up.
        """
        if not self.exists():
            return None
        return sum(1 for row in self.rows() if func is None or row.func in (func, None))

    def functions(self) -> set[str]:
        """The function names the store's records carry."""
        return {row.func for row in self.rows() if row.func is not None}

    def index(self, size: int = 0) -> Index | None:
        """The digests of all completed runs, for checking a grid of ``size`` points.

        None when the store prefers to be asked in batches (`completed`), for example
        when reading every key would cost more than looking up ``size`` runs.
        """
        return None

    def failures(self, ident: Identity) -> int:
        """Failures of the run ``ident`` noted in the ledger since it was last reset."""
        return 0

    def key_columns(self) -> list[str]:
        """The key parameter names seen in this store, in first-seen order."""
        seen: dict[str, None] = {}
        for row in self.rows():
            seen.update(dict.fromkeys(row.values))
        return list(seen)

    # -- claims, for cooperating workers (``once(claim=True)``) ------------------------

    def claim(self, ident: Identity, owner: Owner, lease: float) -> tuple[Outcome, Claim | None]:
        """Try to claim the run ``ident`` for ``owner`` for ``lease`` seconds.

        Returns:
            ``(DONE, None)`` if it completed already, ``(BUSY, claim)`` with the live
            claim of another worker, or ``(CLAIMED, claim)`` when the caller now holds
            it (a stale claim of a dead worker is taken over, one generation up).
        """
        raise NotImplementedError(f"{type(self).__name__} does not support claims")

    def renew(self, held: Sequence[tuple[Identity, Owner, float]]) -> list[Identity]:
        """Extend the leases of claims this process holds; return those it lost."""
        raise NotImplementedError

    def release(self, ident: Identity, owner: Owner) -> None:
        """Give up ``owner``'s claim on ``ident`` (the run failed): others may run it."""
        raise NotImplementedError

    def complete(
        self, ident: Identity, owner: Owner, extra: Mapping[str, str] | None = None
    ) -> bool:
        """Record the claimed run as completed and drop the claim, in one step.

        Returns:
            False when the run was already recorded (a worker that took the claim over
            finished first): no second record is added, and the ledger notes that the
            run was executed twice.
        """
        raise NotImplementedError

    def in_progress(self) -> list[Claim]:
        """The live claims: runs some worker is running now."""
        return []

    def busy(self, owner: Owner | None = None) -> set[int]:
        """Digests of runs other live workers hold claims on (not ``owner``'s)."""
        return {int(c.key, 16) for c in self.in_progress() if owner is None or not c.held_by(owner)}

    # -- the ledger of failures and duplicate executions ------------------------------

    def note(self, event: Event) -> None:
        """Add ``event`` to the store's ledger (never read as a completed run)."""
        raise NotImplementedError

    def events(self) -> list[Event]:
        """Every event of the ledger, oldest first."""
        return []

    # -- the public API (stet 0.0.x compatible) ----------------------------------

    def has(self, key_dict: Mapping[str, Any]) -> bool:
        """Whether a run with exactly this key is recorded (by any function).

        Args:
            key_dict: parameter name to value, as Python values or as their text
                (``{"alpha": "0.1"}`` finds the run of ``alpha=0.1``).
        """
        ident = self._identity(key_dict)
        if any(self.contains(ident.with_func(func)) for func in {None, *self.functions()}):
            return True
        if any(isinstance(v, str) for v in key_dict.values()):
            return any(row_matches(row, key_dict) for row in self.rows())
        return False

    def record(self, key_dict: Mapping[str, Any]) -> None:
        """Record a completed run of ``key_dict`` now (no-op if already recorded).

        String values are recorded as text, as stet 0.0.x stored them, so a decorated
        call with the matching value skips it: recording ``{"alpha": "0.7"}`` marks the
        run of ``alpha=0.7`` done. The record names no function, so it counts for every
        function with these key names.
        """
        self.add(self._identity(key_dict))

    def load(self) -> list[dict[str, str]]:
        """Every record as a dict: key texts plus stet's columns (``_stet_...``)."""
        return [row.as_dict() for row in self.rows()]

    def remove(self, key_dict: Mapping[str, Any]) -> int:
        """Remove the records whose key equals ``key_dict``; return how many."""
        self._identity(key_dict)  # validate names and values before touching the store
        return len(self.discard(lambda row: row_matches(row, key_dict)))

    def clear(self) -> None:
        """Remove every record, keeping an empty store."""
        self.discard(lambda row: True)

    def _identity(self, key_dict: Mapping[str, Any]) -> Identity:
        """The identity of a key given to the public API: strings are matched by text."""
        if not isinstance(key_dict, Mapping):
            raise TypeError(
                f"stet: expected a dict of parameter names to values, got {type(key_dict).__name__}"
            )
        for name in key_dict:
            check_name(name, f"the key for {self.location}")
        ident = identity_of(key_dict)
        if any(isinstance(v, str) for v in key_dict.values()):
            # A string may be the text of any value, as 0.0.x stored them: the record
            # is matched by text alone, and says which values were given as text.
            tags = tuple(
                "text" if isinstance(v, str) else tag
                for v, tag in zip(key_dict.values(), ident.tags, strict=True)
            )
            return Identity(ident.names, tags, ident.texts)
        return ident

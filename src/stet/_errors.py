"""Exceptions stet raises for problems with a store."""

from __future__ import annotations

__all__ = ["StoreError", "StoreLockTimeout", "StoreWarning"]


class StoreError(ValueError):
    """A store that stet cannot read or must not write: it names the file and the problem.

    stet never writes to a store after raising this for it, so the bytes on disk are
    left exactly as they were.
    """


class StoreLockTimeout(StoreError, TimeoutError):
    """The lock guarding a store could not be acquired in time."""


class StoreWarning(UserWarning):
    """stet changed a store to go on (e.g. moved an interrupted write aside) and says so."""

"""stet: run each parameter combination of a sweep once, across restarts.

Decorate an experiment function with `once`; stet records in a readable store
which parameter combinations completed and skips them when the script runs again.
"""

from __future__ import annotations

from stet._decorator import OnceFunction, once
from stet._errors import StoreError, StoreLockTimeout, StoreWarning
from stet._status import Status
from stet._utilities import load, reset, status

__version__ = "0.1.0"

__all__ = [
    "OnceFunction",
    "Status",
    "StoreError",
    "StoreLockTimeout",
    "StoreWarning",
    "__version__",
    "load",
    "once",
    "reset",
    "status",
]

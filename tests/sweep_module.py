"""A sweep whose decorated function lives in an importable module (see test_pickling).

The store and the execution log come from the environment, so that a worker process
(fork or spawn) importing this module decorates against the same store.
"""

from __future__ import annotations

import os

from filelock import FileLock

import stet

STORE = os.environ.get("STET_SWEEP_STORE", "_sweep_store.csv")


@stet.once(store=STORE, quiet=True)
def experiment(x: int, tag: str = "a") -> int:
    """Append one line per execution to $STET_SWEEP_LOG; return twice ``x``."""
    log = os.environ.get("STET_SWEEP_LOG")
    if log:
        # Appends from two processes can overwrite each other on Windows (its C runtime
        # seeks to the end, then writes), so the log has a lock of its own.
        with FileLock(log + ".lock"), open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{x} {tag} {os.getpid()}\n")
    return x * 2

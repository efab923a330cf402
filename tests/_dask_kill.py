"""The experiment of test_dask's killed-worker test, in a module Dask workers can import.

The test decorates :func:`slow_run` itself (with the store and options of each case);
the decorated function pickles as its configuration and a reference to this module.
"""

from __future__ import annotations

import os
import time

#: How long a run waits for the test to open the gate before giving up (so that a
#: broken test cannot leave workers blocked forever).
GATE_TIMEOUT = 300.0


def log_line(log: str, line: str) -> None:
    """Append one line to ``log``; a short append is one write, whole on POSIX systems."""
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def slow_run(k: int, log: str, gate: str) -> int:
    """One run of the sweep: log "start K PID", wait for ``gate`` to exist, log "end K PID".

    Until the test creates ``gate``, every run that has started is stuck in its body, so
    the test can kill a worker knowing that it is in the middle of a run.
    """
    log_line(log, f"start {k} {os.getpid()}")
    deadline = time.monotonic() + GATE_TIMEOUT
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test never created {gate}")
        time.sleep(0.01)
    time.sleep(0.02)  # the experiment
    log_line(log, f"end {k} {os.getpid()}")
    return k

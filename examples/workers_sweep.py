"""Start this script several times on one store: the copies share out the grid.

    for i in 1 2 3 4; do python examples/workers_sweep.py runs.csv & done; wait

Each copy claims a run before starting it, so no run is started twice while its
first worker is alive. A copy that finds nothing left to claim waits for the runs
other copies hold, and takes over those whose worker died. Works the same with a
postgresql:// URL as the store, for copies on many machines (a Slurm array job).

Optional arguments: STORE [LOG [SECONDS_PER_RUN [KEYS]]]. LOG, if given, gets a
"start K PID" and an "end K PID" line per run (the tests read it).
"""

import os
import sys
import time

import stet

STORE = sys.argv[1] if len(sys.argv) > 1 else "workers_runs.csv"
LOG = sys.argv[2] if len(sys.argv) > 2 else None
SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 0.05
KEYS = range(int(sys.argv[4]) if len(sys.argv) > 4 else 40)


def log(line: str) -> None:
    if LOG:
        with open(LOG, "a") as fh:  # a short append: whole lines on POSIX systems
            fh.write(line + "\n")


@stet.once(store=STORE, claim=True, lease=30, quiet=True)
def work(k: int) -> None:
    log(f"start {k} {os.getpid()}")
    time.sleep(SECONDS)  # the experiment
    log(f"end {k} {os.getpid()}")


if __name__ == "__main__":
    # Sweep until every run is recorded: later passes pick up runs whose worker died.
    while pending := list(work.pending({"k": KEYS})):
        for point in pending:
            work(**point)
        time.sleep(SECONDS)
    print(f"worker {os.getpid()} done")

"""Regenerate the status table shown in docs/how-to/notebooks.md from a real store.

Runs a small sweep (some runs fail), starts two workers under other host names (Linux,
as root: ``unshare --uts``) that hold a run each, and writes what
``stet.status(store, grid=...)._repr_html_()`` returns between the page's
``<!-- status-table -->`` markers. Then take the screenshot (see the page's source)::

    sudo python docs/how-to/img/make_status_table.py
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "how-to" / "notebooks.md"
START, END = "<!-- status-table -->", "<!-- /status-table -->"
GRID = {"dataset": ["mnist", "cifar10"], "lr": [0.001, 0.01, 0.1], "seed": [0, 1, 2, 3]}

WORKER = """
import os, sys, time
import stet

@stet.once("runs.csv", claim=True, quiet=True)
def train(dataset, lr, seed):
    open(f"started-{seed}", "w").close()
    while not os.path.exists("release"):
        time.sleep(0.05)

train("cifar10", 0.1, int(sys.argv[1]))
"""


def main() -> None:
    """Build the store, read its status as HTML, and put it in the page."""
    sys.path.insert(0, str(ROOT / "src"))
    import stet

    work = Path(tempfile.mkdtemp(prefix="stet-status-table-"))
    os.chdir(work)

    @stet.once("runs.csv", quiet=True)
    def train(dataset: str, lr: float, seed: int) -> None:
        time.sleep(0.2)  # the experiment
        if lr == 0.1 and seed == 3:
            raise FloatingPointError("loss is NaN")

    for point in list(train.pending(GRID))[:17]:
        with contextlib.suppress(FloatingPointError):
            train(**point)
    with contextlib.suppress(FloatingPointError):
        train("mnist", 0.1, 3)  # its second failure

    (work / "worker.py").write_text(WORKER, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = "hostname {} && exec " + sys.executable + " worker.py {}"
    workers = [
        subprocess.Popen(["unshare", "--uts", "sh", "-c", command.format(host, seed)], env=env)
        for host, seed in (("gpu03", 0), ("gpu04", 1))
    ]
    while not all((work / f"started-{seed}").exists() for seed in (0, 1)):
        time.sleep(0.05)
    time.sleep(1.5)
    html = stet.status("runs.csv", grid=GRID)._repr_html_()
    (work / "release").touch()
    for worker in workers:
        worker.wait()

    text = PAGE.read_text(encoding="utf-8")
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    block = f'<div id="stet-status-example">{html}</div>'
    PAGE.write_text(f"{before}{START}\n{block}\n{END}{after}", encoding="utf-8")
    print(html)


if __name__ == "__main__":
    main()

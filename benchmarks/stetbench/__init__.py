"""stet's benchmark suite, split by concern.

``benchmarks/run.py`` is the entry point; it puts this checkout's ``src/`` first on
``sys.path`` so that what is measured is the stet next to these files, then calls
`stetbench.cli.main`. The modules:

- `plan`: what to measure (full or quick) and the targets, in one place.
- `machine`: a description of the machine, and RSS readings.
- `timing`: per-call timers, interleaved floor/stet rounds, summaries.
- `floor`: the hand-written floor decorators stet is compared with.
- `stores`: filling and inspecting stores (the only module touching stet internals).
- `child`: the fresh-process side (cold starts, sweeps, amortised records, workers).
- `measure`: skip and record path in this process, cold start, pending, sweeps.
- `compare`: ``import stet`` time, joblib.Memory and diskcache on the same no-op.
- `claims` and `proxy`: cooperating workers, directly and through a delaying proxy.
- `suite`: runs all of it in order and collects ``results.json``.
- `report` and `plots`: the text and markdown tables, and the PNG figures.
- `cli`: the command line.

Nothing here imports stet at module level: fresh processes time that import themselves.
"""

from __future__ import annotations

from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
SRC = ROOT / "src"
RUN_PY = BENCH / "run.py"

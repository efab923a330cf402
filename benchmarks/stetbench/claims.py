"""Cooperating workers (``@stet.once(claim=True)``): throughput and one shared grid.

Each scenario starts N worker processes (this script with ``--child``) on one new
store. Every worker opens the store, signals it is ready, and waits; when all are
ready the parent creates the ``go`` file and every worker walks the same keys in the
same order, as N copies of one sweep script would (S6). Wall time runs from ``go`` to
the last worker's end of loop.

- Throughput: no-op bodies, 1, 2, 4 and 8 workers, on every file store and PostgreSQL:
  claimed runs per second (keys / wall time). Workers behind the leader mostly find
  runs done or claimed, so this measures the claim protocol, not the bodies.
- Same grid: 8 workers, 20 ms bodies, wall time against the ideal ``keys * 20 ms / 8``
  (S8: within 2x on SQLite and PostgreSQL, 3x on CSV and JSON).
- PostgreSQL with latency: the throughput scenario through `proxy.DelayProxy`, adding
  about 1 ms to each round trip, for 1 and 8 workers.

Every scenario checks that each key's body ran exactly once and that the store holds
every key afterwards: a duplicate run is a correctness failure, reported as such.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from stetbench import child
from stetbench.plan import FILE_STORES, LABELS, PG, Plan
from stetbench.stores import count_rows, pg_url
from stetbench.timing import progress


def scenario(store: str, workers: int, keys: int, body_s: float, work: Path) -> dict[str, Any]:
    """``workers`` processes walk ``keys`` keys on ``store``; wall time and checks."""
    barrier = Path(tempfile.mkdtemp(prefix="barrier-", dir=work))
    base = {"kind": "claim", "store": store, "keys": keys, "body_s": body_s}
    tasks = [{**base, "barrier": str(barrier), "index": i} for i in range(workers)]
    procs = [
        subprocess.Popen(
            child.command(task),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child.env(),
        )
        for task in tasks
    ]
    try:
        deadline = time.time() + 180
        while len(list(barrier.glob("ready-*"))) < workers:
            if any(p.poll() is not None for p in procs) or time.time() > deadline:
                raise SystemExit(f"claims workers on {store} did not all start")
            time.sleep(0.005)
        go = time.time()
        (barrier / "go").touch()
        results = []
        for task, proc in zip(tasks, procs, strict=True):
            out, err = proc.communicate(timeout=600)
            results.append(
                child.parse(task, subprocess.CompletedProcess([], proc.returncode, out, err))
            )
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(barrier, ignore_errors=True)
    wall = max(r["end"] for r in results) - go
    ran = sum(r["ran"] for r in results)
    rows = count_rows(store)
    return {
        "workers": workers,
        "keys": keys,
        "body_ms": body_s * 1e3,
        "wall_s": wall,
        "runs_per_s": keys / wall,
        "start_spread_ms": (max(r["start"] for r in results) - go) * 1e3,
        "bodies_ran": ran,
        "rows": rows,
        "duplicates": max(ran - keys, 0),
        "missing": max(keys - rows, 0),
        "ok": ran == keys and rows == keys,
    }


def _store(ext: str, work: Path, name: str, postgres: str | None, tables: list[str]) -> str:
    if ext == PG:
        assert postgres is not None
        url = pg_url(postgres, f"bench_{name}")
        tables.append(url)
        return url
    return str(work / f"{name}.{ext}")


def _say(result: dict[str, Any], label: str) -> None:
    if not result["ok"]:
        progress(
            f"  {label}: {result['duplicates']} runs ran twice, {result['missing']} missing "
            f"(bodies ran {result['bodies_ran']} times for {result['keys']} keys)"
        )


def run_all(
    plan: Plan, work: Path, postgres: str | None, tag: str, tables: list[str]
) -> dict[str, Any]:
    """Throughput by worker count, the same-grid scenario, and PostgreSQL with latency."""
    exts = [*FILE_STORES, *([PG] if postgres else [])]
    out: dict[str, Any] = {"throughput": {}, "same_grid": {}}
    for ext in exts:
        progress(f"claims, {LABELS[ext]}: {plan.claim_workers} workers, then the same grid")
        rows = []
        for n in plan.claim_workers:
            store = _store(ext, work, f"{tag}_claims_{ext}_{n}", postgres, tables)
            rows.append(scenario(store, n, plan.claim_keys, 0.0, work))
            _say(rows[-1], f"{LABELS[ext]}, {n} workers")
        out["throughput"][ext] = rows
        store = _store(ext, work, f"{tag}_grid_{ext}", postgres, tables)
        n = plan.same_grid_workers
        result = scenario(store, n, plan.same_grid_keys, plan.same_grid_body_s, work)
        _say(result, f"{LABELS[ext]}, same grid")
        result["ideal_s"] = plan.same_grid_keys * plan.same_grid_body_s / n
        result["factor"] = result["wall_s"] / result["ideal_s"]
        out["same_grid"][ext] = result
    if postgres:
        out["delayed"] = delayed(plan, work, postgres, tag, tables)
    return out


def delayed(plan: Plan, work: Path, postgres: str, tag: str, tables: list[str]) -> dict[str, Any]:
    """PostgreSQL claims throughput through a proxy adding about 1 ms per round trip."""
    from stetbench.proxy import DelayProxy, calibrate, target_of, via

    progress(f"claims, PostgreSQL through a delaying proxy: {plan.delay_workers} workers")
    out: dict[str, Any] = {"network": calibrate(postgres, plan.delay_one_way_s), "rows": []}
    host, port = target_of(postgres)
    with DelayProxy(host, port, out["network"]["delay_each_way_ms"] / 1e3) as proxy:
        for n in plan.delay_workers:
            url = _store(PG, work, f"{tag}_delay_{n}", postgres, tables)
            result = scenario(via(url, proxy.port), n, plan.claim_keys, 0.0, work)
            _say(result, f"PostgreSQL + delay, {n} workers")
            out["rows"].append(result)
    return out

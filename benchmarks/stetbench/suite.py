"""The whole run, in order, collected into the ``results.json`` structure.

For each store size: fill a store per file format for ``f(a, seed)`` and one for
``train(alpha, seed, epochs=10)``; first the cold starts (the first fresh process must
be the first to read the store just written), then the skip path, the amortised record
sweep in a child, then the in-process record path. SQLite's skip and record paths are
also timed against the SQLite floor (`sqlfloor`), and at the big size its ``pending``.
PostgreSQL (``--postgres URL``) gets the skip and record paths at its sizes and
``pending`` on its own table. Then the big-store figures (1,000,000 records in the full
plan), sweeps, the memoizers, and the claims scenarios. Tables made in PostgreSQL are
dropped at the end.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from random import Random
from typing import Any

from stetbench import claims, compare, measure
from stetbench.machine import describe, load_average
from stetbench.plan import (
    FILE_STORES,
    FUNCS,
    LABELS,
    NAMES_F,
    NAMES_TRAIN,
    PG,
    SEEDS,
    TARGETS,
    Plan,
    grid_span,
)
from stetbench.stores import Rows, check_filled, drop_tables, fill, forget, pg_url
from stetbench.timing import progress


class Context:
    """What the stages share: plan, work directory, PostgreSQL URL, and bookkeeping."""

    def __init__(self, plan: Plan, work: Path, postgres: str | None) -> None:
        self.plan = plan
        self.work = work
        self.postgres = postgres
        self.rng = Random(20240601)
        self.tag = f"{os.getpid()}"
        self.tables: list[str] = []  # PostgreSQL stores to drop at the end
        self.fills: dict[str, Any] = {}

    def store(self, ext: str, name: str) -> str:
        if ext == PG:
            assert self.postgres is not None
            url = pg_url(self.postgres, f"bench_{self.tag}_{name}")
            self.tables.append(url)
            return url
        return str(self.work / f"{name}.{ext}")

    def fill(self, store: str, rows: Rows, func: str, label: str, check: bool = True) -> None:
        start = time.perf_counter()
        how = fill(store, rows, FUNCS[func][0], check)
        self.fills[label] = {"seconds": round(time.perf_counter() - start, 2), "how": how}

    def discard(self, store: str) -> None:
        forget(store)
        if "://" not in store:
            for suffix in ("", "-wal", "-shm", ".lock", ".claims"):
                Path(store + suffix).unlink(missing_ok=True)


def run(plan: Plan, work: Path, postgres: str | None) -> dict[str, Any]:
    ctx = Context(plan, work, postgres)
    results: dict[str, Any] = {
        "machine": describe(work),
        "plan": plan.as_dict(),
        "targets": asdict(TARGETS),
        "postgres": bool(postgres),
    }
    try:
        progress("import stet in fresh processes")
        results["import"] = compare.import_times(plan.import_repeats)
        results["bare_call"] = compare.bare_call(plan)
        results["stores"] = sizes(ctx)
        results["big"] = big(ctx, results["stores"])
        if postgres:
            results["pg_pending"] = pg_pending(ctx)
        results["sweep"] = {}
        for ext in FILE_STORES:
            progress(f"{LABELS[ext]}: sweep of {plan.sweep_a * SEEDS:,} points, then resume")
            results["sweep"][ext] = measure.sweep(ctx.store(ext, f"sweep-{ext}"), plan)
        progress("joblib.Memory and diskcache")
        results["comparison"] = compare.memoizers(work, plan, ctx.rng)
        results["claims"] = claims.run_all(plan, work, postgres, ctx.tag, ctx.tables)
    finally:
        if ctx.tables:
            drop_tables(ctx.tables)
    results["fills"] = ctx.fills
    results["machine"]["load_average_end"] = load_average()
    return results


def sizes(ctx: Context) -> dict[str, Any]:
    """Skip path, record path, amortised records and cold start at every plan size."""
    plan = ctx.plan
    exts = [*FILE_STORES, *([PG] if ctx.postgres else [])]
    out: dict[str, dict[str, Any]] = {ext: {} for ext in exts}
    for size in plan.sizes:
        floors = measure.Floors(size)
        for ext in exts:
            if ext == PG and size not in plan.pg_sizes:
                continue
            progress(f"{LABELS[ext]}, {size:,} records: fill, cold start, skip, record")
            stores = {"f": ctx.store(ext, f"f_{size}"), "train": ctx.store(ext, f"train_{size}")}
            # The first reader of the f store is the cold start's first fresh process.
            ctx.fill(stores["f"], Rows(NAMES_F, size), "f", f"{ext} f {size}", check=False)
            ctx.fill(stores["train"], Rows(NAMES_TRAIN, size), "train", f"{ext} train {size}")
            entry: dict[str, Any] = {}
            if ext != PG:
                span = grid_span(size) if size == plan.big else None
                entry["cold"] = measure.cold_start(stores["f"], size, plan.cold_repeats, span)
            check_filled(stores["f"], Rows(NAMES_F, size))
            sqlite = measure.SqliteFloors(size, ctx.work) if ext == "sqlite" else None
            try:
                entry["skip"] = measure.skip_path(stores, size, floors, plan, ctx.rng, sqlite)
                if sqlite is not None and size == plan.big:
                    span = grid_span(size)
                    entry["pending_floor"] = measure.sqlite_pending(
                        sqlite.path("f"), size, span, plan.pending_processes
                    )
                if ext != PG:
                    n = plan.parquet_amortised_calls if ext == "parquet" else plan.amortised_calls
                    entry["amortised"] = measure.amortised(
                        stores["f"],
                        size,
                        n,
                        plan.amortised_limit_s,
                        before=size,
                        repeats=plan.amortised_repeats,
                    )
                if ext != "parquet":
                    floor_file = ctx.work / f"floor-{ext}-{size}.log"
                    entry["record"] = measure.record_path(
                        stores["f"], size, plan, floor_file, sqlite
                    )
            finally:
                if sqlite is not None:
                    sqlite.close()
            out[ext][str(size)] = entry
            for store in stores.values():
                ctx.discard(store)
        del floors
    return out


def big(ctx: Context, stores: dict[str, Any]) -> dict[str, Any]:
    """Cold start, memory and pending on a store of ``plan.big`` records."""
    plan = ctx.plan
    out: dict[str, Any] = {}
    for ext in FILE_STORES:
        done = stores.get(ext, {}).get(str(plan.big))
        if done is not None:  # the size loop measured it already
            out[ext] = done["cold"]
            continue
        progress(f"{LABELS[ext]}, {plan.big:,} records: fill, cold start twice, memory, pending")
        store = ctx.store(ext, f"big_{plan.big}")
        ctx.fill(store, Rows(NAMES_F, plan.big), "f", f"{ext} f {plan.big}", check=False)
        out[ext] = measure.cold_start(store, plan.big, plan.cold_repeats, grid_span(plan.big))
        check_filled(store, Rows(NAMES_F, plan.big))
        ctx.discard(store)
    return out


def pg_pending(ctx: Context) -> dict[str, Any]:
    """``pending`` over a grid half of which a PostgreSQL table holds."""
    n = ctx.plan.pg_pending
    progress(f"PostgreSQL, {n:,} records: fill, pending over a {n:,}-point grid")
    url = ctx.store(PG, f"pending_{n}")
    ctx.fill(url, Rows(NAMES_F, n), "f", f"{PG} f {n}")
    return measure.pending_only(url, n, grid_span(n), ctx.plan.pending_processes)

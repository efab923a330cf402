"""stet's figures judged against `plan.TARGETS`: the rows of the summary table.

Each `Figure` is one number stet achieved (microseconds, seconds, bytes, a factor),
the floor it is compared with where there is one, the target, and whether it passes.
Time targets written for 1,000,000 records or points (first call, ``pending``) are
scaled in proportion when the plan's big store is smaller (the quick plan), and the
row says so: loading and checking cost about the same per record at any size, so the
scaled target tells whether the 1,000,000 one would likely be met. Rows whose target is
"check" pass or fail on correctness alone (a complete file, every key run once).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from stetbench.plan import FILE_STORES, HEAVY, LABELS, MILLION, PG, STYLE_LABELS, STYLES, TARGETS


@dataclass
class Figure:
    """One judged figure. ``value`` and ``floor`` are in ``unit``; ``limit`` too unless
    ``on_ratio`` (then it bounds ``value / floor``)."""

    measure: str
    store: str
    size: str
    value: float | None
    unit: str
    floor: float | None = None
    limit: float | None = None
    on_ratio: bool = False
    note: str = ""
    ok: bool | None = None  # a check that is not a number (complete file, no duplicates)
    measured_ratio: float | None = None  # the median of per-round ratios, when timed so

    @property
    def ratio(self) -> float | None:
        if self.measured_ratio is not None:
            return self.measured_ratio
        if self.value is None or not self.floor:
            return None
        return self.value / self.floor

    @property
    def passed(self) -> bool | None:
        if self.ok is False:
            return False
        checked = self.ratio if self.on_ratio else self.value
        if self.limit is None or checked is None:
            return self.ok
        return checked <= self.limit

    @property
    def result(self) -> str:
        return {True: "pass", False: "MISS", None: ""}[self.passed]

    @property
    def target(self) -> str:
        if self.limit is None:
            return "-" if self.ok is None else "check"
        return (
            f"<= {self.limit:.3g}x floor" if self.on_ratio else f"<= {self.limit:.3g} {self.unit}"
        )


def _sizes(block: dict[str, Any]) -> list[str]:
    return sorted(block, key=int)


def _flat(first: float | None, last: float | None) -> float | None:
    if first is None or last is None or not first:
        return None
    return last / first


def figures(results: dict[str, Any]) -> Iterator[Figure]:
    """Every judged figure of a run, in the order of the summary table."""
    t = TARGETS
    imp = results["import"]
    heavy = imp["heavy_modules_loaded"]
    yield Figure(
        "import stet",
        "-",
        "-",
        imp["median_ms"],
        "ms",
        limit=t.import_ms,
        note=f"loads {', '.join(heavy)}" if heavy else f"none of {', '.join(HEAVY)} loaded",
        ok=not heavy,
    )
    stores = results["stores"]
    for style in STYLES:
        for ext, block in stores.items():
            sizes = _sizes(block)
            limit = t.skip_ratio.get(ext)
            ratios = []
            for size in sizes:
                s = block[size]["skip"][style]
                ratios.append(s["ratio"])
                yield Figure(
                    f"skip {STYLE_LABELS[style]}",
                    LABELS[ext],
                    f"{int(size):,}",
                    s["stet"]["median_us"],
                    "us",
                    floor=s["floor"]["median_us"],
                    limit=limit,
                    on_ratio=True,
                    measured_ratio=s["ratio"],
                )
            if ext == "sqlite":
                yield from _against_sqlite(block, f"skip {STYLE_LABELS[style]}", "skip", style)
            if len(sizes) > 1 and limit:
                # Growth counts from the floor's own cost at most: a skip that beats the
                # floor on a small store must not make the large store look less flat.
                start = None if ratios[0] is None else max(ratios[0], 1.0)
                yield Figure(
                    f"skip {STYLE_LABELS[style]} flat (ratio)",
                    LABELS[ext],
                    f"{int(sizes[-1]):,}/{int(sizes[0]):,}",
                    _flat(start, ratios[-1]),
                    "x",
                    limit=t.flat,
                    note=f"ratio to the floor {ratios[0]:.2f}x -> {ratios[-1]:.2f}x"
                    if ratios[0] is not None and ratios[-1] is not None
                    else "",
                )
    for ext, block in stores.items():
        sizes = [s for s in _sizes(block) if "record" in block[s]]
        limit = t.record_us.get(ext)
        for size in sizes:
            r = block[size]["record"]
            yield Figure(
                "record f(a, seed)",
                LABELS[ext],
                f"{int(size):,}",
                r["stet"]["median_us"],
                "us",
                floor=r["floor"]["median_us"],
                limit=limit,
                measured_ratio=r["ratio"],
            )
        if ext == "sqlite":
            yield from _against_sqlite(block, "record f(a, seed)", "record", None)
        if len(sizes) > 1 and limit:
            first, last = (block[s]["record"]["stet"]["median_us"] for s in (sizes[0], sizes[-1]))
            yield Figure(
                "record flat (us)",
                LABELS[ext],
                f"{int(sizes[-1]):,}/{int(sizes[0]):,}",
                _flat(first, last),
                "x",
                limit=t.flat,
            )
    for ext in FILE_STORES:
        block = stores.get(ext, {})
        sizes = [s for s in _sizes(block) if "amortised" in block[s]]
        limit = t.parquet_amortised_us if ext == "parquet" else None
        for size in sizes:
            a = block[size]["amortised"]
            # The record floor does not depend on the store: the one measured with CSV.
            floor = stores.get("csv", {}).get(size, {}).get("record", {}).get("floor", {})
            yield Figure(
                "records in a new process, incl. exit",
                LABELS[ext],
                f"{int(size):,}",
                a["per_record_us"],
                "us",
                floor=floor.get("median_us"),
                limit=limit,
                note=f"{a['recorded']} records; read back "
                f"{a['rows_read_back']:,}/{a['rows_expected']:,} rows",
                ok=bool(a["complete"]),
            )
        if ext == "parquet" and len(sizes) > 1:
            first, last = (block[s]["amortised"]["per_record_us"] for s in (sizes[0], sizes[-1]))
            yield Figure(
                "records in a new process flat (us)",
                LABELS[ext],
                f"{int(sizes[-1]):,}/{int(sizes[0]):,}",
                _flat(first, last),
                "x",
                limit=t.flat,
            )
    yield from _big(results)
    yield from _pending_against_sqlite(results)
    yield from _claims(results)


def sqlite_timed(sized: dict[str, Any], path: str, style: str | None) -> dict[str, Any]:
    """The timings of ``path`` ("skip" with a call ``style``, or "record") in one size's
    results; they hold ``sqlite_floor`` where the SQLite floor was timed with stet."""
    entry: dict[str, Any] = sized.get(path, {})
    return entry.get(style, {}) if style is not None else entry


def pending_floor(results: dict[str, Any]) -> dict[str, Any] | None:
    """The SQLite floor's ``pending`` at the big size, if it was measured."""
    big = results["stores"].get("sqlite", {}).get(str(results["plan"]["big"]), {})
    found: dict[str, Any] | None = big.get("pending_floor")
    return found


def _against_sqlite(
    block: dict[str, Any], measure: str, path: str, style: str | None
) -> Iterator[Figure]:
    """stet's SQLite figures against the SQLite floor (`sqlfloor`), where measured."""
    for size in _sizes(block):
        entry = sqlite_timed(block[size], path, style)
        if "sqlite_floor" in entry:
            yield Figure(
                f"{measure} vs the SQLite floor",
                LABELS["sqlite"],
                f"{int(size):,}",
                entry["stet"]["median_us"],
                "us",
                floor=entry["sqlite_floor"]["median_us"],
                measured_ratio=entry["ratio_sqlite"],
            )


def _scaled(limit: float, n: int) -> tuple[float, str]:
    """A target set for 1,000,000 scaled to ``n`` records or points, and a note."""
    if n >= MILLION:
        return limit, ""
    return limit * n / MILLION, f"target {limit:g} s at 1,000,000, scaled to {n:,}"


def _big(results: dict[str, Any]) -> Iterator[Figure]:
    t = TARGETS
    big = results["big"]
    size = results["plan"]["big"]
    note = "" if size >= MILLION else "target is for 1,000,000"
    cold_limit, cold_note = _scaled(t.cold_s, size)
    for ext, cold in big.items():
        for which, key in (("1st", "first_ms"), ("2nd", "second_ms")):
            yield Figure(
                f"first call, {which} fresh process",
                LABELS[ext],
                f"{size:,}",
                cold[key] / 1000,
                "s",
                limit=cold_limit,
                note=cold_note,
            )
        yield Figure(
            "index memory (RSS growth / record)",
            LABELS[ext],
            f"{size:,}",
            max(cold["rss_per_record"], cold["rss_per_record_second"]),
            "B",
            limit=t.index_bytes,
            note=note,
        )
    pend = {ext: cold["pending"] for ext, cold in big.items() if "pending" in cold}
    if "pg_pending" in results:
        pend[PG] = results["pg_pending"]
    for ext, p in pend.items():
        for form, full in (
            ("dict", t.pending_dict_s),
            ("tuples", t.pending_list_s),
            ("dicts", t.pending_list_s),
        ):
            limit, grid_note = _scaled(full, p["points"])
            right = p[f"{form}_left"] == p["points"] // 2
            yield Figure(
                f"pending, {'dict of lists' if form == 'dict' else 'list of ' + form}",
                LABELS[ext],
                f"{p['points']:,}",
                p[f"{form}_s"],
                "s",
                limit=limit,
                note=grid_note if right else f"yielded {p[f'{form}_left']:,}, not half",
                ok=None if right else False,
            )


def _pending_against_sqlite(results: dict[str, Any]) -> Iterator[Figure]:
    stet = results["big"].get("sqlite", {}).get("pending")
    floor = pending_floor(results)
    if stet is None or floor is None:
        return
    right = floor["dict_left"] == floor["points"] // 2
    yield Figure(
        "pending, dict of lists, vs the SQLite floor",
        LABELS["sqlite"],
        f"{floor['points']:,}",
        stet["dict_s"],
        "s",
        floor=floor["dict_s"],
        note="" if right else f"the floor yielded {floor['dict_left']:,}, not half",
        ok=None if right else False,
    )


def _claims(results: dict[str, Any]) -> Iterator[Figure]:
    claims = results.get("claims")
    if not claims:
        return
    for ext, r in claims["same_grid"].items():
        yield Figure(
            f"same grid, {r['workers']} workers x {r['keys']} keys, wall / ideal",
            LABELS[ext],
            "-",
            r["factor"],
            "x",
            limit=TARGETS.same_grid_factor.get(ext),
            note=f"{r['wall_s']:.2f} s vs {r['ideal_s']:.2f} s"
            + ("" if r["ok"] else f"; {r['duplicates']} ran twice, {r['missing']} missing"),
            ok=None if r["ok"] else False,
        )
    scenarios = {ext: list(rows) for ext, rows in claims["throughput"].items()}
    if claims.get("delayed"):
        scenarios.setdefault(PG, []).extend(claims["delayed"]["rows"])
    for ext, rows in scenarios.items():
        bad = [r for r in rows if not r["ok"]]
        if bad:
            yield Figure(
                "claims: every key run exactly once",
                LABELS[ext],
                "-",
                None,
                "",
                note=", ".join(f"{r['workers']} workers: {r['duplicates']} twice" for r in bad),
                ok=False,
            )

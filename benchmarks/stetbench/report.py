"""The text report (detail tables, then the judged summary) and the markdown table.

Detail tables show every measurement with its spread of context (floors, sizes, worker
counts); the summary at the end lists each of stet's figures with its floor, ratio,
target and pass/MISS (`summary.figures`). ``--markdown`` prints the table of the docs'
performance page, built from the same figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from stetbench.plan import LABELS, STYLE_LABELS, STYLES
from stetbench.summary import Figure, figures, pending_floor, sqlite_timed


def num(value: float | None) -> str:
    """A number with about three significant digits, never in exponent form."""
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([title, "-" * len(title), line(header), *map(line, rows)])


def _us_ratio(entry: dict[str, Any]) -> str:
    return f"{num(entry['stet']['median_us'])} ({num(entry['ratio'])}x)"


def _sqlite_floor(stores: dict[str, Any], size: int, path: str, style: str | None) -> str:
    """The SQLite floor's median and stet's ratio to it, or "" where not measured."""
    entry = sqlite_timed(stores.get("sqlite", {}).get(str(size), {}), path, style)
    if "sqlite_floor" not in entry:
        return ""
    return f"{num(entry['sqlite_floor']['median_us'])} (stet {num(entry['ratio_sqlite'])}x)"


def header(results: dict[str, Any]) -> str:
    m = results["machine"]
    imp = results["import"]
    return "\n".join(
        [
            f"stet benchmarks ({results['plan']['name']} plan)",
            f"machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), "
            f"{m['memory_gb']} GB; Python {m['python']} ({m['implementation']}); {m['platform']}",
            f"stet {m['stet']} from {m.get('stet_path', '?')}; stores on "
            f"{m['store_filesystem']}; {m['date']}; load average {m['load_average_start']} "
            f"at start, {m.get('load_average_end')} at end",
            f"import stet: {num(imp['median_ms'])} ms median of {len(imp['runs_ms'])} fresh "
            f"processes; heavy modules loaded: {', '.join(imp['heavy_modules_loaded']) or 'none'}"
            f"; also loaded: {', '.join(imp.get('other_modules_loaded', [])) or 'none'}",
            f"undecorated no-op call: {num(results['bare_call']['median_us'])} us median",
        ]
    )


def skip_table(results: dict[str, Any]) -> str:
    stores = results["stores"]
    sizes = sorted({int(s) for block in stores.values() for s in block})
    rows = []
    for style in STYLES:
        for ext, block in stores.items():
            cells = [
                _us_ratio(block[str(s)]["skip"][style]) if str(s) in block else "" for s in sizes
            ]
            rows.append([f"{LABELS[ext]}, {STYLE_LABELS[style]}", *cells])
        floor = [num(stores["csv"][str(s)]["skip"][style]["floor"]["median_us"]) for s in sizes]
        rows.append([f"floor, {STYLE_LABELS[style]} (with CSV)", *floor])
        sqlite = [_sqlite_floor(stores, s, "skip", style) for s in sizes]
        if any(sqlite):
            rows.append([f"SQLite floor, {STYLE_LABELS[style]}", *sqlite])
    parts = []
    for ext, block in stores.items():
        top = block[max(block, key=int)]["skip"].get("parts") or {}
        parts.append(f"{LABELS[ext]} {num(top.get('identity_us'))} + {num(top.get('lookup_us'))}")
    return (
        table(
            "Skip path: median us per call on recorded keys (ratio to the floor, per round)",
            ["store, call", *[f"{s:,}" for s in sizes]],
            rows,
        )
        + "\nidentity + lookup us at the largest size (stet internals; '-' when gone): "
        + "; ".join(parts)
    )


def _amortised(stores: dict[str, Any]) -> list[dict[str, Any]]:
    """Every amortised-records figure of the run."""
    return [e["amortised"] for block in stores.values() for e in block.values() if "amortised" in e]


def _processes(entries: Iterable[dict[str, Any]]) -> str:
    """Whose figures they are: "the median of 3 fresh processes" (the most any of
    ``entries`` has in its ``samples``), or one (runs from before the medians)."""
    n = max((len(e.get("samples", [e])) for e in entries), default=1)
    return f"the median of {n} fresh processes" if n > 1 else "in one fresh process"


def record_table(results: dict[str, Any]) -> str:
    stores = results["stores"]
    sizes = sorted({int(s) for block in stores.values() for s in block})
    rows = []
    for ext, block in stores.items():
        if any("record" in block[str(s)] for s in sizes if str(s) in block):
            cells = [
                _us_ratio(block[str(s)]["record"]) if "record" in block.get(str(s), {}) else ""
                for s in sizes
            ]
            rows.append([f"{LABELS[ext]}, in this process", *cells])
    floor = [num(stores["csv"][str(s)]["record"]["floor"]["median_us"]) for s in sizes]
    rows.append(["record floor (with CSV)", *floor])
    sqlite = [_sqlite_floor(stores, s, "record", None) for s in sizes]
    if any(sqlite):
        rows.append(["SQLite floor", *sqlite])
    for ext, block in stores.items():
        if any("amortised" in block.get(str(s), {}) for s in sizes):
            cells = []
            for s in sizes:
                a = block.get(str(s), {}).get("amortised")
                cells.append(
                    "" if a is None else f"{num(a['per_record_us'])} (exit {num(a['exit_ms'])} ms)"
                )
            rows.append([f"{LABELS[ext]}, new process incl. exit", *cells])
    return table(
        "Record path: median us per call on new keys (ratio to the record floor, per round); "
        "new process: (exit - loop start) / records, " + _processes(_amortised(stores)),
        ["store", *[f"{s:,}" for s in sizes]],
        rows,
    )


def cold_table(results: dict[str, Any]) -> str:
    stores = results["stores"]
    big = results["big"]
    big_size = results["plan"]["big"]
    sizes = sorted({int(s) for ext in big for s in stores[ext]} | {big_size})
    rows = []
    for ext, cold_big in big.items():
        cells = []
        for s in sizes:
            cold = cold_big if s == big_size else stores[ext][str(s)]["cold"]
            cells.append(f"{num(cold['first_ms'])} / {num(cold['second_ms'])}")
        rows.append(
            [
                LABELS[ext],
                *cells,
                num(cold_big["rss_per_record"]),
                num(cold_big["rss_per_record_second"]),
                num(cold_big["index_bytes_per_record"]),
                num(cold_big["peak_per_record"]),
                num(cold_big["decorate_ms"]),
            ]
        )
    return table(
        "Cold start: first call in the 1st / 2nd fresh process after the store was "
        f"written, ms; memory per record at {big_size:,}",
        [
            "store",
            *[f"{s:,}" for s in sizes],
            "RSS B",
            "RSS B 2nd",
            "index B",
            "peak B",
            "once() ms",
        ],
        rows,
    )


def pending_table(results: dict[str, Any]) -> str:
    pend = {ext: c["pending"] for ext, c in results["big"].items() if "pending" in c}
    if "pg_pending" in results:
        pend["postgres"] = results["pg_pending"]
    rows = [
        [
            LABELS[ext],
            f"{p['points']:,}",
            num(p["dict_s"]),
            num(p["tuples_s"]),
            num(p["dicts_s"]),
            f"{p['dict_left']:,}",
        ]
        for ext, p in pend.items()
    ]
    floor = pending_floor(results)
    if floor is not None:
        rows.append(
            [
                "SQLite floor",
                f"{floor['points']:,}",
                num(floor["dict_s"]),
                "",
                "",
                f"{floor['dict_left']:,}",
            ]
        )
    note = ""
    if "pg_pending" in results and results["pg_pending"]["points"] < results["plan"]["big"]:
        note = (
            f"\nPostgreSQL uses a {results['pg_pending']['points']:,}-point grid "
            "(filling its table as large as the file stores' is too slow for this plan)."
        )
    return (
        table(
            "pending(grid): seconds for a grid of which the store holds half, "
            + _processes(pend.values()),
            ["store", "points", "dict of lists", "list of tuples", "list of dicts", "yielded"],
            rows,
        )
        + note
    )


def sweep_table(results: dict[str, Any]) -> str:
    rows = []
    for ext, s in results["sweep"].items():
        rows.append(
            [
                LABELS[ext],
                num(s["first_run_s"]),
                num(s["first_run_per_point_us"]),
                num(s["resume_s"]),
                num(s["resume_per_point_us"]),
            ]
        )
    points = next(iter(results["sweep"].values()))["points"]
    return table(
        f"Sweep of {points:,} points in a fresh process (loop only), then its resume",
        ["store", "first run s", "us/point", "resume s", "us/point"],
        rows,
    )


def claims_table(results: dict[str, Any]) -> str:
    claims = results["claims"]
    counts = sorted({r["workers"] for rows in claims["throughput"].values() for r in rows})
    rows = []
    for ext, results_ in claims["throughput"].items():
        by = {r["workers"]: r for r in results_}
        rows.append([LABELS[ext], *[num(by[n]["runs_per_s"]) if n in by else "" for n in counts]])
    delayed = claims.get("delayed")
    if delayed:
        by = {r["workers"]: r for r in delayed["rows"]}
        label = f"PostgreSQL +{num(delayed['network']['added_rtt_ms'])} ms RTT"
        rows.append([label, *[num(by[n]["runs_per_s"]) if n in by else "" for n in counts]])
    keys = next(iter(claims["throughput"].values()))[0]["keys"]
    out = table(
        f"Claims: claimed runs per second, {keys} no-op runs, N workers walking the same keys",
        ["store", *[f"{n} worker{'s' if n > 1 else ''}" for n in counts]],
        rows,
    )
    grid = [
        [
            LABELS[ext],
            num(r["wall_s"]),
            num(r["ideal_s"]),
            f"{num(r['factor'])}x",
            num(r["start_spread_ms"]),
            "yes" if r["ok"] else f"NO ({r['duplicates']} twice, {r['missing']} missing)",
        ]
        for ext, r in claims["same_grid"].items()
    ]
    first = next(iter(claims["same_grid"].values()))
    out += "\n\n" + table(
        f"Same grid: {first['workers']} workers x {first['keys']} keys, "
        f"{num(first['body_ms'])} ms bodies",
        ["store", "wall s", "ideal s", "wall/ideal", "start spread ms", "each key once"],
        grid,
    )
    if delayed:
        net = delayed["network"]
        out += (
            f"\nproxy: {num(net['delay_each_way_ms'])} ms each way (nominal "
            f"{num(net['nominal_delay_each_way_ms'])}) -> query round trip "
            f"{num(net['direct_rtt_ms'])} ms direct, {num(net['proxied_rtt_ms'])} ms proxied"
        )
    return out


def comparison_table(results: dict[str, Any]) -> str:
    comp = results["comparison"]
    rows = [
        [
            name,
            f"{c['entries']:,}",
            num(c["hit"]["median_us"]),
            num(c["miss"]["median_us"]),
        ]
        for name, c in comp.items()
    ]
    return table(
        "Memoizers on the same no-op (for scale): median us",
        ["tool", "entries", "hit", "miss+store"],
        rows,
    )


def summary_table(figs: list[Figure]) -> str:
    rows = [
        [
            f.measure,
            f.store,
            f.size,
            f"{num(f.value)} {f.unit}".strip(),
            "-" if f.floor is None else f"{num(f.floor)} {f.unit}",
            "-" if f.ratio is None else f"{num(f.ratio)}x",
            f.target,
            f.result,
            f.note,
        ]
        for f in figs
    ]
    misses = sum(f.passed is False for f in figs)
    judged = sum(f.passed is not None for f in figs)
    return table(
        f"Summary: stet against the targets ({judged - misses} of {judged} pass)",
        ["measure", "store", "records", "stet", "floor", "ratio", "target", "result", "note"],
        rows,
    )


def text_report(results: dict[str, Any]) -> str:
    parts = [
        header(results),
        skip_table(results),
        record_table(results),
        cold_table(results),
        pending_table(results),
        sweep_table(results),
    ]
    if results.get("claims"):
        parts.append(claims_table(results))
    parts.append(comparison_table(results))
    parts.append(summary_table(list(figures(results))))
    return "\n\n".join(parts) + "\n"


def markdown_table(results: dict[str, Any]) -> str:
    """The results table of the docs' performance page: one line per measure and store."""
    groups: dict[tuple[str, str], list[Figure]] = {}
    for f in figures(results):
        groups.setdefault((f.measure, f.store), []).append(f)
    lines = ["| Measure | Store | Target | Result |", "| --- | --- | --- | --- |"]
    for (measure, store), figs in groups.items():
        first, last = figs[0], figs[-1]

        def shown(f: Figure) -> str:
            text = f"{num(f.value)} {f.unit}".strip().replace("us", "µs")
            return text + (f" ({num(f.ratio)}x floor)" if f.ratio is not None else "")

        sizes = f" ({first.size} → {last.size} records)" if len(figs) > 1 else ""
        result = shown(first) if len(figs) == 1 else f"{shown(first)} → {shown(last)}"
        verdicts = {f.result for f in figs if f.result}
        verdict = " ✗" if "MISS" in verdicts else (" ✓" if verdicts else "")
        target = first.target.replace("<=", "≤").replace("us", "µs")
        lines.append(f"| {measure}{sizes} | {store} | {target} | {result}{verdict} |")
    comp = results["comparison"]
    for name, label in (("joblib", "joblib.Memory"), ("diskcache", "diskcache")):
        c = comp[name]
        lines.append(
            f"| Cache hit / miss and store (comparison) | {label} | — | "
            f"{num(c['hit']['median_us'])} µs / {num(c['miss']['median_us'])} µs |"
        )
    return "\n".join(lines) + "\n"

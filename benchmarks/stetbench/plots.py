"""PNG figures for the docs' performance page, drawn from ``results.json``.

- ``skip_path.png``: skip cost against store size (all-positional calls, with the floor
  and two memoizers' hits), and every call style's ratio to the floor with its target.
- ``record_path.png``: record cost against store size: in-process appends, the
  new-process figure (Parquet's target), the record floor and the targets.
- ``cold_start.png``: ``import stet`` and the first call in a 1st and 2nd fresh process.
- ``pending.png``: ``f.pending(grid)`` per store and grid form, with the targets.
- ``claims.png``: claimed runs per second by worker count, and the same-grid factor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stetbench.plan import COLORS, LABELS, MARKERS, MILLION, STYLE_LABELS, STYLES, TARGETS

LINESTYLES = {"positional": "-", "keyword": "--", "readme": ":"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _size_axis(ax: Any, sizes: list[int], log_y: bool = True) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_xscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([f"{s:,}" for s in sizes], fontsize=8)
    ax.minorticks_off()
    if log_y:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("records in the store")
    ax.grid(True, which="major", alpha=0.3)


def _sizes(block: dict[str, Any], need: str) -> list[int]:
    return sorted(int(s) for s, entry in block.items() if need in entry)


def _save(fig: Any, path: Path, written: list[Path]) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    written.append(path)


def skip_plot(results: dict[str, Any], out: Path, written: list[Path]) -> None:
    plt = _pyplot()
    stores = results["stores"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    sizes: list[int] = []
    for ext, block in stores.items():
        xs = _sizes(block, "skip")
        sizes = sorted(set(sizes) | set(xs))
        ys = [block[str(s)]["skip"]["positional"]["stet"]["median_us"] for s in xs]
        kw = {"marker": MARKERS[ext], "markerfacecolor": "none", "color": COLORS[ext]}
        left.plot(xs, ys, label=f"stet {LABELS[ext]}", **kw)
        if ext not in TARGETS.skip_ratio:
            continue  # a server's round trip is off this scale
        for style in STYLES:
            rs = [block[str(s)]["skip"][style]["ratio"] for s in xs]
            right.plot(xs, rs, linestyle=LINESTYLES[style], **kw)
    csv = stores["csv"]
    xs = _sizes(csv, "skip")
    floor = [csv[str(s)]["skip"]["positional"]["floor"]["median_us"] for s in xs]
    left.plot(xs, floor, color="black", linestyle="--", label="floor (bind + dict lookup)")
    for tool, color, style in (("joblib", "tab:gray", ":"), ("diskcache", "tab:brown", "-.")):
        hit = results["comparison"][tool]["hit"]["median_us"]
        left.axhline(hit, color=color, linestyle=style, label=f"{tool} hit")
    _size_axis(left, sizes)
    left.set_ylabel("median µs per call, f(a, seed)")
    left.set_title("Skip path: a call whose run is recorded")
    left.legend(fontsize=7, loc="upper left")
    for value in sorted(set(TARGETS.skip_ratio.values())):
        right.axhline(value, color="black", linestyle="--", linewidth=0.8)
    for style in STYLES:
        right.plot([], [], color="black", linestyle=LINESTYLES[style], label=STYLE_LABELS[style])
    for ext in stores:
        if ext in TARGETS.skip_ratio:
            right.plot([], [], color=COLORS[ext], marker=MARKERS[ext], label=LABELS[ext])
    _size_axis(right, sizes, log_y=False)
    right.set_ylim(bottom=0)
    right.set_ylabel("stet / floor (targets dashed: 1.5x, SQLite 2x)")
    right.set_title("Skip path as a ratio to the floor, by call style (file stores)")
    right.legend(fontsize=7, loc="upper left", ncol=2)
    _save(fig, out / "skip_path.png", written)


def record_plot(results: dict[str, Any], out: Path, written: list[Path]) -> None:
    plt = _pyplot()
    stores = results["stores"]
    fig, ax = plt.subplots(figsize=(10, 4.8))
    sizes: list[int] = []
    for ext, block in stores.items():
        kw = {"marker": MARKERS[ext], "color": COLORS[ext]}
        xs = _sizes(block, "record")
        if xs:
            ys = [block[str(s)]["record"]["stet"]["median_us"] for s in xs]
            ax.plot(xs, ys, markerfacecolor="none", label=f"stet {LABELS[ext]}", **kw)
        xa = _sizes(block, "amortised")
        if xa:
            ya = [block[str(s)]["amortised"]["per_record_us"] for s in xa]
            ax.plot(xa, ya, linestyle=":", label=f"{LABELS[ext]}, new process incl. exit", **kw)
        sizes = sorted(set(sizes) | set(xs) | set(xa))
    csv = stores["csv"]
    xs = _sizes(csv, "record")
    floor = [csv[str(s)]["record"]["floor"]["median_us"] for s in xs]
    ax.plot(xs, floor, color="black", linestyle="--", label="record floor (append under lock)")
    for value, label in (
        (TARGETS.record_us["csv"], "target CSV, JSON"),
        (TARGETS.record_us["sqlite"], "target SQLite"),
        (TARGETS.parquet_amortised_us, "target Parquet (amortised)"),
    ):
        ax.axhline(value, color="gray", linestyle="-.", linewidth=0.8)
        ax.annotate(label, (sizes[0], value), fontsize=7, va="bottom")
    for tool, color in (("joblib", "tab:gray"), ("diskcache", "tab:brown")):
        miss = results["comparison"][tool]["miss"]["median_us"]
        ax.axhline(miss, color=color, linestyle=":", label=f"{tool} miss+store")
    _size_axis(ax, sizes)
    ax.set_ylabel("µs per recorded run")
    ax.set_title("Record path: a call with a new key (run, then record)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    _save(fig, out / "record_path.png", written)


def cold_plot(results: dict[str, Any], out: Path, written: list[Path]) -> None:
    plt = _pyplot()
    stores, big = results["stores"], results["big"]
    big_size = results["plan"]["big"]
    exts = list(big)
    groups = sorted({int(s) for e in exts for s in stores[e]} | {big_size})
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8), gridspec_kw={"width_ratios": [1, 5]})
    imp = results["import"]["median_ms"]
    left.bar(["import stet"], [imp], color="tab:gray")
    left.axhline(TARGETS.import_ms, color="black", linestyle="--", label="target")
    left.set_ylabel("ms")
    left.set_ylim(0, max(TARGETS.import_ms, imp) * 1.3)
    left.legend(fontsize=8)
    width = 0.8 / len(groups)
    shades = ["#c6dbef", "#6baed6", "#2171b5", "#08306b", "#041a3b"]
    for j, size in enumerate(groups):
        for which, hatch in (("first_ms", ""), ("second_ms", "//")):
            xs, ys = [], []
            for i, ext in enumerate(exts):
                cold = big[ext] if size == big_size else stores[ext].get(str(size), {}).get("cold")
                if cold is None:
                    continue
                offset = (j - (len(groups) - 1) / 2) * width
                xs.append(i + offset + (width / 4 if hatch else -width / 4))
                ys.append(max(cold[which], 0.01))
            label = f"{size:,} records" + (", 2nd process" if hatch else "")
            right.bar(
                xs, ys, width=width / 2, color=shades[j % len(shades)], hatch=hatch, label=label
            )
    right.axhline(TARGETS.cold_s * 1000, color="black", linestyle="--", label="target at 1,000,000")
    right.set_yscale("log")
    right.set_xticks(range(len(exts)))
    right.set_xticklabels([LABELS[e] for e in exts])
    right.set_ylabel("first call, ms (log scale)")
    right.grid(True, axis="y", alpha=0.3)
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle("Cold start: a fresh process imports stet, then its first call reads the store")
    _save(fig, out / "cold_start.png", written)


def pending_plot(results: dict[str, Any], out: Path, written: list[Path]) -> None:
    plt = _pyplot()
    pend = {ext: c["pending"] for ext, c in results["big"].items() if "pending" in c}
    if "pg_pending" in results:
        pend["postgres"] = results["pg_pending"]
    if not pend:
        return
    fig, ax = plt.subplots(figsize=(9, 4.5))
    forms = (("dict", "dict of lists"), ("tuples", "list of tuples"), ("dicts", "list of dicts"))
    width = 0.8 / len(forms)
    for j, (form, label) in enumerate(forms):
        xs = [i + (j - 1) * width for i in range(len(pend))]
        ax.bar(xs, [p[f"{form}_s"] for p in pend.values()], width=width, label=label)
    # The targets are for 1,000,000 points: scaled to each grid, as in the summary.
    for i, p in enumerate(pend.values()):
        scale = min(1.0, p["points"] / MILLION)
        for value, color, label in (
            (TARGETS.pending_dict_s, "black", "target, dict of lists"),
            (TARGETS.pending_list_s, "gray", "target, lists"),
        ):
            ax.plot(
                [i - 0.45, i + 0.45],
                [value * scale] * 2,
                color=color,
                linestyle="--",
                label=label if i == 0 else None,
            )
    ax.set_xticks(range(len(pend)))
    ax.set_xticklabels([f"{LABELS[e]}\n{p['points']:,} points" for e, p in pend.items()])
    ax.set_ylabel("seconds")
    ax.set_title("f.pending(grid) over a grid half of which is recorded (targets scaled from 1M)")
    ax.legend(fontsize=8)
    _save(fig, out / "pending.png", written)


def claims_plot(results: dict[str, Any], out: Path, written: list[Path]) -> None:
    claims = results.get("claims")
    if not claims:
        return
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    for ext, rows in claims["throughput"].items():
        xs = [r["workers"] for r in rows]
        left.plot(
            xs,
            [r["runs_per_s"] for r in rows],
            marker=MARKERS[ext],
            color=COLORS[ext],
            label=LABELS[ext],
        )
    delayed = claims.get("delayed")
    if delayed:
        rows = delayed["rows"]
        label = f"PostgreSQL +{delayed['network']['added_rtt_ms']:.1f} ms RTT"
        left.plot(
            [r["workers"] for r in rows],
            [r["runs_per_s"] for r in rows],
            marker="v",
            color="tab:purple",
            linestyle="--",
            label=label,
        )
    counts = sorted({r["workers"] for rows in claims["throughput"].values() for r in rows})
    left.set_xscale("log", base=2)
    left.set_xticks(counts)
    left.set_xticklabels([str(n) for n in counts])
    left.minorticks_off()
    left.set_yscale("log")
    left.set_xlabel("worker processes")
    left.set_ylabel("claimed runs per second (no-op bodies)")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    grid = claims["same_grid"]
    exts = list(grid)
    right.bar(range(len(exts)), [grid[e]["factor"] for e in exts], color=[COLORS[e] for e in exts])
    for i, ext in enumerate(exts):
        limit = TARGETS.same_grid_factor.get(ext)
        if limit:
            right.plot([i - 0.4, i + 0.4], [limit, limit], color="black", linestyle="--")
    right.set_xticks(range(len(exts)))
    right.set_xticklabels([LABELS[e] for e in exts], fontsize=8)
    first = next(iter(grid.values()))
    right.set_ylabel("wall time / ideal (targets dashed)")
    right.set_title(
        f"{first['workers']} workers, one grid of {first['keys']}, {first['body_ms']:g} ms bodies",
        fontsize=9,
    )
    _save(fig, out / "claims.png", written)


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    """Draw every figure into ``out``; return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for draw in (skip_plot, record_plot, cold_plot, pending_plot, claims_plot):
        draw(results, out, written)
    return written

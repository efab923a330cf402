"""``stet.status``: what a store holds, what failed, what is running, how much is left.

`Status` is the answer: printed line by line in a script (as stet always did), shown
as an HTML table in Jupyter, and plain attributes for code.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from stet._identity import Identity, identity_of, parse_types
from stet.backends._claims import Claim
from stet.backends._ledger import DUPLICATE, FAILURE, RESET, Event

if TYPE_CHECKING:
    from stet.backends import BaseBackend

__all__ = ["Status", "build_status", "progress"]


@dataclass
class Status:
    """A summary of one store.

    Attributes:
        store: where the store is (a URL without its password).
        completed: how many runs are recorded.
        by_function: records per function name (None: records that name none).
        last_run: the newest ``_stet_timestamp``, or ``"never"``.
        key_columns: the key parameter names in the store.
        failed: failures noted in the ledger since each run's last reset.
        failed_runs: how many distinct runs those failures belong to.
        running: live claims: runs some worker is running now.
        duplicates: runs executed a second time after their claim was taken over.
        total: the grid's size, when a grid was given.
        done: how many of the grid's points completed.
        eta: the time left at the recent pace, in words.
    """

    store: str
    completed: int
    by_function: dict[str | None, int]
    last_run: str
    key_columns: list[str]
    failed: int = 0
    failed_runs: int = 0
    running: list[Claim] = field(default_factory=list)
    duplicates: int = 0
    total: int | None = None
    done: int | None = None
    eta: str | None = None

    def lines(self) -> list[str]:
        """The summary as ``[stet] ...`` lines, as `stet.status` prints them."""
        count = f"[stet] {self.completed} completed experiments recorded"
        if self.failed:
            count += f", {self.failed} failed ({self.failed_runs} distinct runs)"
        out = [f"[stet] Store: {self.store}", count]
        named = {f: n for f, n in self.by_function.items() if f is not None}
        if len(self.by_function) > 1 or (named and len(named) != len(self.by_function)):
            parts = [
                f"{f if f is not None else '(no function)'}: {n}" for f, n in self._functions()
            ]
            out.append(f"[stet] By function: {', '.join(parts)}")
        out.append(f"[stet] Last run: {self.last_run}")
        columns = ", ".join(self.key_columns) if self.key_columns else "(none)"
        out.append(f"[stet] Key columns: {columns}")
        if self.running:
            out.append(f"[stet] {len(self.running)} runs in progress (claimed by live workers)")
            now = time.time()
            for claim in self.running[:10]:
                out.append(f"[stet]   {claim.run} on {_owner(claim)}, {_age(claim, now)}")
        if self.duplicates:
            out.append(
                f"[stet] {self.duplicates} runs were executed twice (their claim was taken "
                "over after its lease ran out)"
            )
        if self.total is not None and self.done is not None:
            share = 100.0 * self.done / self.total if self.total else 100.0
            out.append(f"[stet] Progress: {self.done} / {self.total} done ({share:.1f}%)")
            if self.done < self.total and self.eta is not None:
                out.append(f"[stet] ETA: {self.eta}")
        return out

    def _functions(self) -> list[tuple[str | None, int]]:
        return sorted(self.by_function.items(), key=lambda item: (item[0] is None, item[0] or ""))

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        """The summary as an HTML table (Jupyter shows this)."""
        import html  # only for notebooks

        e = html.escape
        rows = [("Store", e(self.store)), ("Completed", f"{self.completed:,}")]
        if len(self.by_function) > 1:
            rows += [
                (f"&nbsp;&nbsp;{e(f) if f is not None else '(no function)'}", f"{n:,}")
                for f, n in self._functions()
            ]
        rows.append(("Failed", f"{self.failed:,} ({self.failed_runs:,} distinct runs)"))
        rows.append(("Last run", e(self.last_run)))
        rows.append(("Key columns", e(", ".join(self.key_columns) or "(none)")))
        if self.duplicates:
            rows.append(("Executed twice", f"{self.duplicates:,}"))
        if self.total is not None and self.done is not None:
            share = 100.0 * self.done / self.total if self.total else 100.0
            bar = (
                f'<progress value="{self.done}" max="{self.total}"></progress> '
                f"{self.done:,} / {self.total:,} ({share:.1f}%)"
            )
            rows.append(("Progress", bar))
            if self.eta and self.done < self.total:
                rows.append(("ETA", e(self.eta)))
        body = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>" for k, v in rows
        )
        table = f"<table class='stet-status'>{body}</table>"
        if self.running:
            now = time.time()
            running = "".join(
                f"<tr><td>{e(c.run)}</td><td>{e(_owner(c))}</td>"
                f"<td>{e(_running_for(c, now))}</td></tr>"
                for c in self.running
            )
            table += (
                f"<p><b>{len(self.running)} runs in progress</b></p><table class='stet-running'>"
                f"<tr><th>run</th><th>worker</th><th>running for</th></tr>{running}</table>"
            )
        return f"<div class='stet'><p><b>stet</b> status</p>{table}</div>"


def _owner(claim: Claim) -> str:
    return f"{claim.owner.host} (pid {claim.owner.pid})"


def _age(claim: Claim, now: float) -> str:
    left = claim.expires - now
    return f"lease {left:.0f} s left" if left >= 0 else "lease expired"


def _running_for(claim: Claim, now: float) -> str:
    """How long the claim's worker has been running it (its lease, if not recorded)."""
    if claim.since is None:
        return _age(claim, now)
    seconds = max(int(now - claim.since), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def build_status(backend: BaseBackend, where: str, grid: Any = None) -> Status:
    """The status of ``backend`` (and of ``grid``'s points in it)."""
    rows = backend.rows()
    by_function: dict[str | None, int] = {}
    for row in rows:
        by_function[row.func] = by_function.get(row.func, 0) + 1
    status = Status(
        store=where,
        completed=len(rows),
        by_function=by_function,
        last_run=max((row.timestamp for row in rows), default="never"),
        key_columns=backend.key_columns(),
        running=backend.in_progress(),
    )
    failures: dict[str, int] = {}
    last: dict[str, Event] = {}
    for event in backend.events():
        if event.kind == FAILURE:
            failures[event.key] = failures.get(event.key, 0) + 1
            last[event.key] = event
        elif event.kind == RESET:
            failures.pop(event.key, None)
        elif event.kind == DUPLICATE:
            status.duplicates += 1
    if failures:
        # A run that failed and then completed is done, not failed.
        keys = list(failures)
        done = backend.completed([_run_of(last[key]) for key in keys])
        for key, finished in zip(keys, done, strict=True):
            if finished:
                del failures[key]
    status.failed = sum(failures.values())
    status.failed_runs = len(failures)
    if grid is not None:
        status.total, status.done = progress(backend, grid)
        if status.done < status.total:
            status.eta = eta([row.timestamp for row in rows], status.total - status.done)
    return status


def _run_of(event: Event) -> Identity:
    """The run a ledger event is about."""
    names, tags = parse_types(event.types)
    texts = tuple(event.run[name] for name in names)
    return Identity(names, tags, texts, event.func, int(event.key, 16))


def progress(backend: BaseBackend, grid: Any) -> tuple[int, int]:
    """How many points the grid has, and how many of them completed (by any function)."""
    points: Iterable[Mapping[str, Any]]
    if isinstance(grid, Mapping):
        names = list(grid)
        points = (
            dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(grid[n] for n in names))
        )
    else:
        points = grid
    funcs = [None, *sorted(backend.functions())]
    total = done = 0
    iterator = iter(points)
    while batch := list(itertools.islice(iterator, 4096)):
        for point in batch:
            if not isinstance(point, Mapping):
                raise TypeError(
                    "stet: the grid is a dict of lists or a list of dicts of key values; got "
                    f"a {type(point).__name__} point"
                )
        total += len(batch)
        idents = [identity_of(point) for point in batch]
        found = [False] * len(batch)
        for func in funcs:
            answers = backend.completed([i.with_func(func) for i in idents])
            found = [a or b for a, b in zip(found, answers, strict=True)]
        done += sum(found)
    return total, done


def eta(stamps: list[str], remaining: int) -> str:
    """Time left for ``remaining`` runs at the pace of the last 50 completions.

    The pace counts completions of every worker, so it is the whole sweep's pace.
    """
    recent = sorted(stamps)[-50:]
    if len(recent) < 2:
        return "unknown until two runs have completed"
    first = datetime.fromisoformat(recent[0])
    last = datetime.fromisoformat(recent[-1])
    seconds = (last - first).total_seconds()
    if seconds <= 0:
        return "unknown (the recent runs share one timestamp)"
    per_run = seconds / (len(recent) - 1)
    left = int(per_run * remaining)
    hours, rest = divmod(left, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"
    return f"{text} at the recent pace ({per_run:.3g} s per run)"

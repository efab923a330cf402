"""What stet tells the researcher: skip lines, the first-call line, the summary.

Every line is printed (``[stet] ...``) and also sent to the ``logging`` logger named
``stet``, so an application can route or silence it. ``quiet`` (an option of
``once``, or ``STET_QUIET``) decides how many per-run lines are printed.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import weakref
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from collections.abc import Callable

    from stet._identity import Identity
    from stet.backends._claims import Claim

__all__ = ["SKIP_LINES", "Reporter", "logger", "say"]

#: Skip lines printed per function before stet stops announcing each one.
SKIP_LINES = 10

#: The logger every message also goes to (level INFO; warnings at WARNING).
logger = logging.getLogger("stet")


def say(text: str, level: int = logging.INFO) -> None:
    """Print a line and log it; characters the console cannot show are escaped."""
    logger.log(level, text.removeprefix("[stet] "))
    stream = sys.stdout
    try:
        print(text, file=stream)
    except UnicodeEncodeError:
        encoding = getattr(stream, "encoding", None) or "ascii"
        print(text.encode(encoding, "backslashreplace").decode(encoding), file=stream)


def quiet_from_env() -> bool | None:
    """``STET_QUIET``: True (1/true/yes/on), False (0/false/no/off) or None (unset)."""
    text = os.environ.get("STET_QUIET", "").strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    return None


def _count(n: int) -> str:
    return f"{n:,}"


class Reporter:
    """The messages of one decorated function, and its counts for the summary."""

    _live: ClassVar[weakref.WeakSet[Reporter]] = weakref.WeakSet()

    def __init__(self, name: str, quiet: bool | None) -> None:
        self.name = name
        self.quiet = quiet
        self.skips = 0
        self.ran = 0
        self.failed = 0
        self.announced = False
        Reporter._live.add(self)

    def _quiet(self) -> bool | None:
        return self.quiet if self.quiet is not None else quiet_from_env()

    def first_call(self, where: str, count: Callable[[], int | None]) -> None:
        """Say once which store this function uses and how many of its runs it holds.

        ``count`` is asked only when the line is shown: on a database it is a query
        over every record.
        """
        self.announced = True
        if self._quiet():
            return
        held = count()
        if held is None:
            say(f"[stet] {self.name}: store {where} (new, nothing recorded yet)")
        else:
            runs = "run" if held == 1 else "runs"
            say(f"[stet] {self.name}: store {where} holds {_count(held)} completed {runs} of it")

    def skipped(self, ident: Identity, busy: Claim | None = None, why: str | None = None) -> None:
        """A call was skipped: print its line, or count it silently."""
        self.skips += 1  # a count lost to a thread race would only shift the 10-line limit
        skips = self.skips
        quiet = self._quiet()
        if quiet:
            return
        if quiet is None and skips > SKIP_LINES and why is None:
            if skips == SKIP_LINES + 1:
                say(
                    f"[stet] Skipping more completed runs of {self.name} without a line "
                    "each (STET_QUIET=0 shows every skip, STET_QUIET=1 none)"
                )
            return
        shown = describe_short(ident)  # only now: most skips print nothing
        if busy is not None:
            owner = busy.owner
            say(
                f"[stet] Skipping {self.name}({shown}): another worker is running it "
                f"({owner.host}, pid {owner.pid})"
            )
        elif why is not None:
            say(f"[stet] Skipping {self.name}({shown}): {why}")
        else:
            say(f"[stet] Skipping {self.name}({shown})")

    def summary(self) -> str | None:
        """``train: 120 ran, 9,880 skipped, 3 failed``, or None if nothing was called."""
        if not (self.ran or self.skips or self.failed):
            return None
        text = f"{self.name}: {_count(self.ran)} ran, {_count(self.skips)} skipped"
        if self.failed:
            text += f", {_count(self.failed)} failed"
        return text

    @classmethod
    def at_exit(cls) -> None:
        """Print each function's summary line when the script ends."""
        for reporter in list(cls._live):
            line = reporter.summary()
            if line is not None and not reporter._quiet():
                with contextlib.suppress(ValueError, OSError):  # stdout closed already
                    say(f"[stet] {line}")


atexit.register(Reporter.at_exit)


def describe_short(ident: Identity) -> str:
    """The run as a skip line shows it: each value cut to 60 characters."""
    from stet.backends._records import describe

    return describe(ident, limit=60)

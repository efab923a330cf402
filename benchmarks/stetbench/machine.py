"""The machine the figures come from, and the memory readings of a process.

Medians on a shared 2-core machine move with other work, so every result file carries
the CPU, core count, file system of the stores and the load average at start and end.
`rss` and `peak_rss` read /proc/self/status; the index memory of a store is measured
as the growth of the resident set across its first call (see `child`).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any


def proc_status(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM) in bytes; 0 if unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss() -> int:
    """Resident set size of this process, bytes."""
    return proc_status("VmRSS")


def peak_rss() -> int:
    """Peak resident set size of this process so far, bytes."""
    return proc_status("VmHWM")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def filesystem_of(path: Path) -> str:
    """The file system type holding ``path`` (from /proc/mounts), or ``"?"``."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1]
                inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best):
                    best, kind = mount, parts[2]
    except OSError:
        pass
    return kind


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def describe(work: Path) -> dict[str, Any]:
    """CPU, memory, Python, stet version, file system of ``work``, load, date."""
    import stet

    try:
        cores_usable = len(os.sched_getaffinity(0))
    except AttributeError:
        cores_usable = os.cpu_count() or 0
    total_kb = 0
    try:
        with open("/proc/meminfo") as f:
            total_kb = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": cores_usable,
        "memory_gb": round(total_kb / 1024**2, 1),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "stet": getattr(stet, "__version__", "?"),
        "stet_path": str(Path(stet.__file__).resolve().parent),
        "store_filesystem": filesystem_of(work),
        "load_average_start": load_average(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }

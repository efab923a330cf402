"""Whether a process that claimed a run is still alive, without being fooled.

A pid alone lies: pids are reused, a zombie still has one, and two containers sharing a
host name each have their own pid 42. So a process is named by its pid *and* its start
time, and it is judged only from the same machine *and* the same pid namespace (the
``place`` of `this_process`). Anything judged from elsewhere is left to its lease.
"""

from __future__ import annotations

import os
import socket
import sys
from functools import lru_cache

__all__ = ["alive", "pid_alive", "this_place", "this_process"]


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("ascii", "replace")
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """State letter and start time (clock ticks after boot) of a Linux process."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


@lru_cache(maxsize=1)
def this_place() -> str:
    """Where pids of this process can be judged: host, boot and pid namespace.

    On Linux, ``host/boot-id/pid-namespace``: two containers that share a host name
    but not a pid namespace get different places. Elsewhere, the host name.
    """
    host = socket.gethostname()
    if not sys.platform.startswith("linux"):
        return host
    boot = (_read("/proc/sys/kernel/random/boot_id") or "").strip()
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{host}/{boot[:8]}/{namespace}"


def _start_time(pid: int) -> int:
    """The start time of process ``pid`` (0 where it cannot be told)."""
    found = _proc_stat(pid) if sys.platform.startswith("linux") else None
    return 0 if found is None else found[1]


_mine: dict[int, int] = {}


def this_process() -> tuple[int, int]:
    """``(pid, start time)`` of the calling process."""
    pid = os.getpid()
    start = _mine.get(pid)
    if start is None:
        start = _mine[pid] = _start_time(pid)
    return pid, start


def alive(place: str, pid: int, started: int) -> bool | None:
    """Whether the process ``pid`` that started at ``started`` on ``place`` still runs.

    Returns None when this process cannot tell (another machine or pid namespace): the
    caller then goes by the lease alone.
    """
    if place != this_place():
        return None
    if not sys.platform.startswith("linux"):
        return pid_alive(pid)
    found = _proc_stat(pid)
    if found is None:
        return False
    state, start = found
    if state in ("Z", "X"):
        return False  # a zombie: finished, only waiting for its parent to notice
    return not started or start == started  # a different start time: the pid was reused


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    if pid <= 0:
        return False
    if os.name == "nt":
        return _windows_pid_alive(pid)  # os.kill(pid, 0) would terminate the process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return True  # cannot tell: assume alive, the lease decides
    return True


def _windows_pid_alive(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined,unused-ignore]
    query_limited_information = 0x1000
    still_active = 259
    handle = kernel32.OpenProcess(query_limited_information, False, pid)
    if not handle:
        # No such process, or one we may not inspect: only the former is dead.
        return bool(kernel32.GetLastError() == 5)  # ERROR_ACCESS_DENIED
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == still_active
    finally:
        kernel32.CloseHandle(handle)

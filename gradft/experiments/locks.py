"""Cell locks: one file per grid cell, taken with O_CREAT|O_EXCL, holding the holder's PID, host, boot id and the
process's start time (``/proc/<pid>/stat``), so that workers and concurrent grid processes never run a cell twice at
once and a killed worker's cell is taken over. A lock is stale, and broken (one breaker at a time), when it was
written on this host and its process is gone, or its PID now names another process (a PID reused after a restart:
another start time, or another boot). Locks written on another host are never broken, since the holder may be alive
there, unless asked (``--break-locks``: ``acquire(break_foreign=True)``); ``describe`` says who holds one."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("gradft.experiments.grid")
HOST = socket.gethostname()


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


BOOT_ID = _read("/proc/sys/kernel/random/boot_id")
BOOT_TIME = next((float(line.split()[1]) for line in (_read("/proc/stat") or "").splitlines()
                  if line.startswith("btime ")), None)


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state is [0], start time [19]); None when gone."""
    text = _read(f"/proc/{pid}/stat")
    return text.rsplit(")", 1)[1].split() if text else None


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None without /proc): with the PID, who it is."""
    fields = _stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def _pid_alive(pid: int) -> bool:
    """Alive and not a zombie (a killed process that its parent has not reaped yet)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False
    except (OSError, IndexError):  # PermissionError: alive, someone else's; no /proc: trust kill(0)
        return True


def holder_gone(info: dict[str, Any]) -> bool:
    """The lock's writer (on this host) no longer runs: its PID is dead, or names a process started at another time
    or in another boot (locks from before the start time was recorded: the PID and the boot time)."""
    pid = int(info.get("pid", -1))
    if info.get("boot_id") and BOOT_ID and info["boot_id"] != BOOT_ID:
        return True
    if BOOT_TIME and float(info.get("time") or BOOT_TIME) < BOOT_TIME:  # written before this boot (older locks)
        return True
    if not _pid_alive(pid):
        return True
    return info.get("start") is not None and start_time(pid) not in (None, info["start"])


def _is_stale(lock: Path, break_foreign: bool = False) -> bool:
    """Stale: written on this host by a process that is gone (or, with ``break_foreign``, on another host)."""
    try:
        info = json.loads(lock.read_text())
        if info.get("host") != HOST:
            return break_foreign
        return holder_gone(info)
    except FileNotFoundError:
        return True
    except (OSError, ValueError, TypeError, AttributeError):  # being written (O_EXCL, then the pid), or garbage
        return time.time() - lock.stat().st_mtime > 60 if lock.exists() else True


def describe(lock: Path, advice: bool = True) -> str:
    """Who holds ``lock``, in words: ``pid 123 on host h since 04:33:10`` (and, with ``advice``, what to do if the
    host is another)."""
    try:
        info = json.loads(lock.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("time", lock.stat().st_mtime))))
        text = f"pid {info.get('pid')} on host {info.get('host')} since {since}"
    except (OSError, ValueError, TypeError, AttributeError):
        return f"{lock} (unreadable: broken after 60 s)"
    if advice and info.get("host") != HOST:
        text += (f" (another host than this {HOST}: never broken from here; if no grid runs there any more, rerun "
                 "with --break-locks)")
    return text


def _break_stale(lock: Path, break_foreign: bool = False) -> None:
    """Remove a stale lock, one breaker at a time (a guard file), so that a lock taken meanwhile is never removed."""
    guard = lock.with_name(lock.name + ".break")
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:  # another process is breaking it; a guard left by a crash expires after a minute
        with contextlib.suppress(FileNotFoundError):
            if time.time() - guard.stat().st_mtime > 60:
                guard.unlink()
        return
    try:
        if _is_stale(lock, break_foreign):
            log.warning("breaking stale lock %s (%s)", lock, describe(lock, advice=False))
            lock.unlink(missing_ok=True)
    finally:
        os.close(fd)
        guard.unlink(missing_ok=True)


def acquire(lock: Path, break_foreign: bool = False) -> bool:
    """Take the cell's lock (O_CREAT|O_EXCL), breaking a stale one (and, with ``break_foreign``, another host's);
    False when a live process holds it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _is_stale(lock, break_foreign):
                return False
            _break_stale(lock, break_foreign)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps({"pid": os.getpid(), "host": HOST, "time": time.time(), "boot_id": BOOT_ID,
                                "start": start_time(os.getpid())}))
        return True
    return False

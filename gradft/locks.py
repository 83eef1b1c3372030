"""Cell locks: one file per grid cell, taken with O_CREAT|O_EXCL, holding the holder's PID and host; a lock whose
process is gone (on this host) is stale and broken, one breaker at a time, so that workers and concurrent grid
processes never run a cell twice at once and a killed worker's cell is taken over."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path

log = logging.getLogger("gradft.grid")
HOST = socket.gethostname()


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


def _is_stale(lock: Path) -> bool:
    """Stale: written on this host by a process that is gone. Locks from other hosts are never broken here."""
    try:
        info = json.loads(lock.read_text())
        return info.get("host") == HOST and not _pid_alive(int(info.get("pid", -1)))
    except FileNotFoundError:
        return True
    except (OSError, ValueError):  # being written right now (O_EXCL, then the pid), or garbage left by a crash
        return time.time() - lock.stat().st_mtime > 60 if lock.exists() else True


def _break_stale(lock: Path) -> None:
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
        if _is_stale(lock):
            log.warning("breaking stale lock %s", lock)
            lock.unlink(missing_ok=True)
    finally:
        os.close(fd)
        guard.unlink(missing_ok=True)


def acquire(lock: Path) -> bool:
    """Take the cell's lock (O_CREAT|O_EXCL), breaking a stale one; False when a live process holds it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _is_stale(lock):
                return False
            _break_stale(lock)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps({"pid": os.getpid(), "host": HOST, "time": time.time()}))
        return True
    return False

"""Stopping a run from outside, on the record: SIGTERM (``timeout``, schedulers, ``docker stop``) is handled like
SIGINT. Either raises ``RunInterrupted`` (a ``KeyboardInterrupt``: ``except Exception`` in grids and Optuna's
``catch`` do not swallow it) through the run, whose ``finally`` finishes the W&B run as failed before any
results.json is written; the CLI then logs one line (``interrupted at step 60/300; no results written``) and exits
130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by a signal; ``exit_code`` is the shell's 128 + signal number."""

    def __init__(self, message: str, signal_name: str = "SIGINT"):
        super().__init__(message)
        self.signal_name = signal_name
        self.exit_code = EXIT_CODES.get(signal_name, 130)


_requested: str | None = None  # a SIGTERM arrived (set by the handler; cleared when an outermost block starts)
_depth = 0


def _raise_interrupted(signum: int, frame: object) -> None:
    global _requested
    _requested = "SIGTERM"
    raise RunInterrupted("SIGTERM", "SIGTERM")


def check() -> None:
    """Raise ``RunInterrupted`` if a SIGTERM arrived and the process went on. A handler's exception is lost when
    the signal lands inside a finalizer (``__del__``, a gc or weakref callback: Python prints "Exception ignored"),
    so the trainer's step loop, the grid's cell loop and the sweep's trial loop call this: a sweep worker once
    started a new trial after its SIGTERM was swallowed, and was killed in it, leaving the trial RUNNING."""
    if _requested:
        raise RunInterrupted(_requested, _requested)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises ``RunInterrupted`` (main thread only; the old handler is put back after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _requested, _depth
    if _depth == 0:
        _requested = None  # a new outermost block (a test process runs many): an old stop is not this one's
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        signal.signal(signal.SIGTERM, previous)


def interrupted(e: KeyboardInterrupt, step: int | None, total: int) -> RunInterrupted:
    """The one-line record of where a run stopped."""
    name = getattr(e, "signal_name", "SIGINT")
    where = f"at step {step}/{total}" if step is not None else f"before or after training ({total} steps)"
    return RunInterrupted(f"{name}: interrupted {where}; no results written", name)

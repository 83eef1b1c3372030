"""Stopping a run from outside, on the record: SIGTERM (``timeout``, schedulers, ``docker stop``) is handled like
SIGINT. Either raises ``RunInterrupted`` (a ``KeyboardInterrupt``: ``except Exception`` in grids and Optuna's
``catch`` do not swallow it) through the run, whose ``finally`` finishes the W&B run as failed before any
results.json is written; the CLI then logs one line (``interrupted at step 60/300; no results written``) and exits
130 (SIGINT) or 143 (SIGTERM). ``deferred`` holds either signal over a library call that must not be cut in half (W&B's
init, log, summary and finish: ``gradft.tracking.Tracker``) and delivers it when the call returns.

Early stopping (below): Training length by one rule for every method: ``trainer.stop=fixed|early``, and the run's
record of it.

Owns ``EarlyStopping`` (best selection accuracy so far, a copy of the trainable weights at it, the patience count,
and putting the best weights back) and ``final_train_loss``. The keys of this rule and of the carved selection split
are checked before any data or model is loaded (``gradft.config.nodes``: ``TrainerConfig``, ``DataConfig``).

* ``fixed`` (the default): every step of ``train_steps`` (``trainer.steps``, or ``trainer.epochs`` × steps per
  epoch capped at ``trainer.max_steps``: the epochs rule gives each k the same number of passes over its shots).
* ``early``: the same count is the cap; the selection split (the carved one with ``data.select=pool``, else the
  task's) is scored every ``eval.select_every`` steps, including at the cap, and training stops once
  ``trainer.patience`` scores in a row have not beaten the best one (strictly). The trainable weights of the best
  score (the earliest, on ties) are then put back in memory, so the evaluation is of that checkpoint. The optimizer
  state, the schedule (it decays over the cap) and guidance's state are not restored: nothing trains after it.

results.json records ``steps`` (the cap), ``steps_run``, ``best_step`` (the step whose weights were evaluated: the
last one under ``fixed``), ``stopped_early`` and ``final_train_loss`` (the mean training loss over the last epoch's
steps up to ``best_step``; non-finite, skipped steps left out) for every run.
"""

from __future__ import annotations

import contextlib
import math
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


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block SIGINT and SIGTERM are held, then delivered again when it ends (main thread only): a library
    call is never cut in half. W&B's ``log`` / ``finish`` cut by Ctrl-C left a coroutine never awaited (a warning at
    exit, a run not closed). A SIGTERM held here is remembered (``check``) even if the block ends by an exception."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, frame: object) -> None:
        global _requested
        held.append(signum)
        if signum == signal.SIGTERM:
            _requested = "SIGTERM"

    previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: a handler set outside Python
    if held:  # as if it arrived now: the handlers in place outside the block decide (raise, or the default action)
        signal.raise_signal(held[0])


def interrupted(e: KeyboardInterrupt, step: int | None, total: int) -> RunInterrupted:
    """The one-line record of where a run stopped."""
    name = getattr(e, "signal_name", "SIGINT")
    where = f"at step {step}/{total}" if step is not None else f"before or after training ({total} steps)"
    return RunInterrupted(f"{name}: interrupted {where}; no results written", name)


# --- early stopping --------------------------------------------------------------------------------------

class EarlyStopping:
    """Feed it each selection score; it says when to stop, and ``restore()`` puts the best weights back."""

    def __init__(self, params: list, patience: int):
        self.params, self.patience = list(params), int(patience)
        self.best_acc = -math.inf
        self.best_step: int | None = None
        self.bad = 0
        self._best: list | None = None

    def update(self, step: int, acc: float) -> bool:
        """Record the score at ``step``; True when ``patience`` scores in a row have not beaten the best."""
        if math.isfinite(acc) and acc > self.best_acc:
            self.best_acc, self.best_step, self.bad = acc, step, 0
            self._best = [p.detach().clone() for p in self.params]
            return False
        self.bad += 1
        return self.bad >= self.patience

    def restore(self) -> None:
        """Copy the best checkpoint's trainable weights back into the model (nothing to do before any score)."""
        if self._best is None:
            return
        import torch

        with torch.no_grad():
            for p, best in zip(self.params, self._best, strict=True):
                p.copy_(best)


def final_train_loss(losses: list[float], end: int, per_epoch: int) -> float | None:
    """Mean of the finite training losses of steps ``end - per_epoch .. end - 1``: the last epoch of the weights
    that were evaluated (None without a finite one)."""
    window = [v for v in losses[max(0, end - max(per_epoch, 1)):end] if math.isfinite(v)]
    return sum(window) / len(window) if window else None

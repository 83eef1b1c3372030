"""Training length by one rule for every method: ``trainer.stop=fixed|early``, and the run's record of it.

Owns ``EarlyStopping`` (best selection accuracy so far, a copy of the trainable weights at it, the patience count,
and putting the best weights back), ``final_train_loss`` and ``check_stop_config`` (the torch-free checks that
``gradft.config.validate`` runs for the keys of this rule and of the carved selection split).

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

import math
from typing import Any

STOP_MODES = ("fixed", "early")
SELECT_MODES = ("task", "pool")  # = gradft.data.selection.SELECT_MODES (gradft.data imports torch: not here)


def check_stop_config(cfg: Any) -> None:
    """``trainer.stop``, ``trainer.patience``, ``data.select``, ``data.select_size``: a bad value fails before any
    data or model is loaded, naming its key."""
    tr, data = cfg.trainer, cfg.data
    stop = tr.get("stop", "fixed")
    if stop not in STOP_MODES:
        raise ValueError(f"trainer.stop={stop!r}: must be one of {', '.join(STOP_MODES)}")
    _positive_int("trainer.patience", tr.get("patience", 3))
    if stop == "early" and not (cfg.eval.select_every or 0) > 0:
        raise ValueError("trainer.stop=early scores the selection split every eval.select_every steps: set "
                         "eval.select_every=N (N > 0), e.g. the steps of one epoch")
    select = data.get("select", "task")
    if select not in SELECT_MODES:
        raise ValueError(f"data.select={select!r}: must be one of {', '.join(SELECT_MODES)}")
    _positive_int("data.select_size", data.get("select_size", 500))


def _positive_int(key: str, v: Any) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{key}={v!r}: must be an integer ≥ 1")


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

"""Tuning that can select: the objective's noise, and control points that let "no guidance" win.

Owns ``objective_stats`` (a trial's per-task and per-seed mean selection accuracies and the objective's standard
error: the sample std over its (task, seed) runs / sqrt(n)), and control points: a sweep spec's ``controls:`` list of
config points (``{method.lr: 5.0e-4, guidance.lambda1: 0, guidance.lambda2: 0}``) that are run once each, first,
like ``enqueue:`` points, but may hold values outside the search space (λ = 0 on a log-scale range, which Optuna
cannot take as a parameter). A control's keys that the space can hold become the trial's parameters (the sampler
learns from them); the others are plain overrides of that trial, recorded in its user attr ``control`` and never
shown to the sampler as parameters. ``trial_values`` is what a trial ran with: its parameters and its control's
overrides (the best-params file and ``gradft.experiments.tuned`` use it, so a control that wins is run as it was tuned).
"""

from __future__ import annotations

import logging
import math
import statistics
from typing import Any

import optuna
from optuna.trial import TrialState

log = logging.getLogger("gradft.experiments.sweep")


def objective_stats(accs: dict[str, float]) -> dict[str, Any]:
    """``{"task/s<seed>": acc}`` -> user attrs: per task, per seed, and the objective's standard error."""
    tasks: dict[str, list[float]] = {}
    seeds: dict[str, list[float]] = {}
    for key, acc in accs.items():
        task, seed = key.rsplit("/", 1)
        tasks.setdefault(task, []).append(acc)
        seeds.setdefault(seed, []).append(acc)
    values = list(accs.values())
    finite = all(map(math.isfinite, values))
    se = statistics.stdev(values) / math.sqrt(len(values)) if finite and len(values) > 1 else None
    return {"select_accuracy_tasks": {k: statistics.fmean(v) for k, v in tasks.items()},
            "select_accuracy_seeds": {k: statistics.fmean(v) for k, v in seeds.items()},
            "select_accuracy_se": se, "select_accuracy_n": len(values)}


def in_space(value: Any, d: dict[str, Any]) -> bool:
    """Whether ``value`` is a valid parameter value of the space entry ``d`` (a float/int range or choices)."""
    if d["type"] == "categorical":
        return value in list(d["choices"])
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return d["low"] <= value <= d["high"] and not (d.get("log") and value <= 0)


def split_control(control: dict[str, Any], space: dict[str, dict[str, Any]]) -> tuple[dict[str, Any],
                                                                                      dict[str, Any]]:
    """A control point -> (the parameters the space can hold, the overrides it cannot)."""
    params = {k: v for k, v in control.items() if k in space and in_space(v, space[k])}
    return params, {k: v for k, v in control.items() if k not in params}


def enqueue_controls(study: optuna.Study, controls: list[dict[str, Any]], space: dict[str, dict[str, Any]]) -> None:
    """Each control point once: again if every trial that had it FAILed (a killed worker's), else skipped."""
    trials = study.get_trials(deepcopy=False)
    for control in controls:
        control = dict(control)
        same = [t for t in trials if t.user_attrs.get("control") == control]
        if same and not all(t.state == TrialState.FAIL for t in same):
            continue
        params, _ = split_control(control, space)
        log.info("enqueueing control point %s", control)
        study.enqueue_trial(params, user_attrs={"control": control}, skip_if_exists=False)


def control_overrides(trial: optuna.trial.BaseTrial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The overrides of a control trial that are not parameters (empty for every other trial)."""
    return split_control(trial.user_attrs.get("control") or {}, space)[1]


def trial_values(trial: optuna.trial.FrozenTrial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What a trial ran with: its parameters, then its control's other overrides."""
    return {**trial.params, **control_overrides(trial, space)}

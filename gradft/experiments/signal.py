"""Tuning that can select: the objective's noise, and control points that let "no guidance" win.

Owns ``objective_stats`` (a trial's per-task and per-seed mean selection accuracies and the objective's standard
error: the sample std over its (task, seed) runs / sqrt(n)), and control points: a sweep spec's ``controls:`` list of
config points (``{method.lr: 5.0e-4, guidance.lambda1: 0, guidance.lambda2: 0}``) that are run once each, first,
like ``enqueue:`` points, but may hold values outside the search space (λ = 0 on a log-scale range, which Optuna
cannot take as a parameter). A control's keys that the space can hold become the trial's parameters (the sampler
learns from them); the others are plain overrides of that trial, recorded in its user attr ``control`` and never
shown to the sampler as parameters. ``trial_values`` is what a trial ran with: its parameters and its control's
overrides (the best-params file and ``gradft.experiments.tuned`` use it, so a control that wins is run as it was tuned).

Owns ``selection_summary`` too (issue 28, item 2: could the study select?), written by ``gradft.experiments.tuned``
into the grid file's ``tuning`` node and printed by ``gradft.report.tuning``: the best trial's objective SE (user attr
``select_accuracy_se``; None in studies from before it), best − default (the spec's first ``enqueue`` point: the
config's defaults) and best − runner-up (the second-best COMPLETE trial), each with a paired bootstrap 95 % CI over
the (task, seed) cells both trials ran when their per-cell accuracies are stored (user attr ``select_accuracy_runs``:
``{"task/s<seed>": acc}``; ``gradft.experiments.stats``), else the bare difference; and the λ = 0 control trials.
"""

from __future__ import annotations

import logging
import math
import statistics
from typing import Any

import optuna
from optuna.trial import TrialState

from gradft.experiments.stats import paired_comparison

log = logging.getLogger("gradft.experiments.sweep")
RUNS = "select_accuracy_runs"  # gradft.experiments.sweep: a trial's selection accuracy per (task, seed) run
SE = "select_accuracy_se"  # objective_stats: the objective's standard error


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


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def difference(a: Any, b: Any) -> dict[str, Any]:
    """a − b of two trials' objectives: paired over their shared (task, seed) cells when both stored them."""
    ra, rb = a.user_attrs.get(RUNS), b.user_attrs.get(RUNS)
    out: dict[str, Any] = {"trial": b.number, "diff": a.value - b.value, "ci_low": None, "ci_high": None,
                           "n_pairs": 0, "paired": False}
    if isinstance(ra, dict) and isinstance(rb, dict) and set(ra) & set(rb):
        c = paired_comparison(ra, rb)
        out.update(diff=c["mean_diff"], ci_low=_finite(c["ci_low"]), ci_high=_finite(c["ci_high"]),
                   n_pairs=c["n_pairs"], paired=True)
    return out


def _is_default(t: Any, point: dict[str, Any]) -> bool:
    return all(t.params.get(k) == v or (isinstance(v, float) and isinstance(t.params.get(k), float)
                                        and math.isclose(t.params[k], v)) for k, v in point.items())


def selection_summary(trials: list[Any], enqueue: list[dict[str, Any]]) -> dict[str, Any]:
    """The noise block of one study (plain data: it goes into the grid file's yaml)."""
    done = sorted([t for t in trials if t.state == TrialState.COMPLETE and _finite(t.value) is not None],
                  key=lambda t: (-t.value, t.number))
    if not done:
        return {}
    best = done[0]
    default = next((t for t in sorted(done, key=lambda t: t.number) if enqueue and _is_default(t, enqueue[0])
                    and "control" not in t.user_attrs), None)
    runs = best.user_attrs.get(RUNS)
    return {"best_trial": best.number, "se": _finite(best.user_attrs.get(SE)),
            "se_from_runs": _finite(objective_stats(runs)["select_accuracy_se"]) if isinstance(runs, dict) else None,
            "best_is_control": "control" in best.user_attrs, "cells_stored": isinstance(runs, dict),
            "minus_default": difference(best, default) if default is not None and default is not best else None,
            "default_is_best": default is best,
            "minus_runner_up": difference(best, done[1]) if len(done) > 1 else None,
            "controls": [{"trial": t.number, "value": t.value, "control": dict(t.user_attrs["control"])}
                         for t in sorted(done, key=lambda t: t.number) if "control" in t.user_attrs]}

"""The statistics methods and tuning trials are compared with: bootstrap confidence intervals, paired tests over
(task, seed) cells, and Holm's correction for testing one method against several baselines.

Owns the arithmetic only (numbers in, numbers out); ``gradft.report.build`` decides what a report compares, and
``gradft.experiments.signal.selection_summary`` what a tuning study's selection is compared with. It sits here, below
the reports, because both use it. Every resampling is seeded, so a report is a pure function of its results.json
files.

    cells     {(task, seed): accuracy} of one method
    average   the mean over tasks of each task's mean over seeds (every task weighs the same, whatever its seeds)
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

B = 10_000  # bootstrap resamples
SEED = 0


def task_average(cells: Mapping[tuple[str, int], float]) -> float:
    """Mean over tasks of the per-task mean over seeds."""
    by_task: dict[str, list[float]] = defaultdict(list)
    for (task, _), v in cells.items():
        by_task[task].append(v)
    return float(np.mean([np.mean(v) for v in by_task.values()])) if by_task else math.nan


def bootstrap_average_ci(cells: Mapping[tuple[str, int], float], level: float = 0.95, n: int = B,
                         seed: int = SEED) -> tuple[float, float]:
    """Percentile CI of ``task_average``: seeds resampled with replacement within each task (tasks are fixed: they
    are the benchmark, seeds are the noise). NaN bounds with fewer than 2 seeds in every task."""
    by_task: dict[str, list[float]] = defaultdict(list)
    for (task, _), v in sorted(cells.items()):
        by_task[task].append(v)
    if not by_task or max(len(v) for v in by_task.values()) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.zeros(n)
    for values in by_task.values():
        a = np.asarray(values)
        means += a[rng.integers(0, len(a), size=(n, len(a)))].mean(axis=1)
    means /= len(by_task)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_mean_ci(values: Sequence[float], level: float = 0.95, n: int = B,
                      seed: int = SEED) -> tuple[float, float]:
    """Percentile CI of the mean of ``values`` (resampled with replacement)."""
    a = np.asarray(values, dtype=float)
    if len(a) < 2:
        return math.nan, math.nan
    means = a[np.random.default_rng(seed).integers(0, len(a), size=(n, len(a)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def paired_comparison(a: Mapping[tuple[str, int], float], b: Mapping[tuple[str, int], float]) -> dict[str, float]:
    """a − b over the (task, seed) cells both have: mean difference, its bootstrap 95% CI, paired t-test and
    Wilcoxon signed-rank p-values (two-sided; 1.0 when every difference is 0, NaN below 2 pairs)."""
    keys = sorted(set(a) & set(b))
    d = np.asarray([a[k] - b[k] for k in keys], dtype=float)
    out = {"n_pairs": len(keys), "mean_diff": float(d.mean()) if len(d) else math.nan,
           "p_ttest": math.nan, "p_wilcoxon": math.nan}
    out["ci_low"], out["ci_high"] = bootstrap_mean_ci(d)
    if len(d) >= 2:
        if np.allclose(d, 0):
            out.update(p_ttest=1.0, p_wilcoxon=1.0)
        else:
            out["p_ttest"] = float(stats.ttest_rel([a[k] for k in keys], [b[k] for k in keys]).pvalue)
            out["p_wilcoxon"] = float(stats.wilcoxon(d).pvalue)
    return out


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given; NaN stays NaN and is not counted)."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    m, out, running = len(order), [math.nan] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))  # monotone: never below an earlier one
        out[i] = running
    return out

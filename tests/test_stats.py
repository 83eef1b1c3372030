"""The statistics of reports and tuning (gradft.experiments.stats): Holm's adjustment (checked against its
definition and a textbook case), bootstrap CIs that cover what they should and shrink with more seeds, and paired
tests that see a consistent difference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradft.experiments import stats


def test_holm_matches_the_step_down_definition():
    # Holm (1979): sort p ascending, multiply the i-th smallest by (m − i), keep it monotone, cap at 1
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    adj = stats.holm([0.02, math.nan, 0.01])
    assert adj[0] == pytest.approx(0.02) and math.isnan(adj[1]) and adj[2] == pytest.approx(0.02)


def test_task_average_weighs_every_task_the_same_whatever_its_seeds():
    cells = {("cb", 0): 0.2, ("cb", 1): 0.4, ("rte", 0): 0.9}
    assert stats.task_average(cells) == pytest.approx((0.3 + 0.9) / 2)


def test_bootstrap_ci_contains_the_estimate_and_shrinks_with_more_seeds():
    rng = np.random.default_rng(1)
    few = {(t, s): 0.6 + 0.1 * rng.standard_normal() for t in ("a", "b") for s in range(3)}
    many = {(t, s): 0.6 + 0.1 * rng.standard_normal() for t in ("a", "b") for s in range(30)}
    for cells in (few, many):
        lo, hi = stats.bootstrap_average_ci(cells)
        assert lo <= stats.task_average(cells) <= hi
    assert np.subtract(*stats.bootstrap_average_ci(many)[::-1]) < np.subtract(*stats.bootstrap_average_ci(few)[::-1])
    assert stats.bootstrap_average_ci(few) == stats.bootstrap_average_ci(few)  # seeded: the same CI every time
    assert all(math.isnan(x) for x in stats.bootstrap_average_ci({("a", 0): 0.5}))


def test_paired_comparison_detects_a_consistent_difference_and_not_noise():
    rng = np.random.default_rng(2)
    base = {(t, s): 0.5 + 0.1 * rng.standard_normal() for t in ("a", "b", "c") for s in range(5)}
    better = {k: v + 0.05 + 0.01 * rng.standard_normal() for k, v in base.items()}
    noise = {k: v + 0.05 * rng.standard_normal() for k, v in base.items()}
    t = stats.paired_comparison(better, base)
    assert t["n_pairs"] == 15 and t["mean_diff"] == pytest.approx(0.05, abs=0.01)
    assert t["p_ttest"] < 1e-6 and t["p_wilcoxon"] < 1e-3 and 0 < t["ci_low"] < t["mean_diff"] < t["ci_high"]
    n = stats.paired_comparison(noise, base)
    assert n["p_ttest"] > 0.05 and n["ci_low"] < 0 < n["ci_high"]
    same = stats.paired_comparison(base, base)
    assert same["p_ttest"] == same["p_wilcoxon"] == 1.0

"""Task metrics and the two gradient metrics, against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from gradft.metrics import GradientMonitor, exact_match, f1_macro, f1a, majority_baseline, task_metrics


def test_gradient_stability_is_one_over_one_plus_coefficient_of_variation():
    d = torch.tensor([1.0, 0.0])
    mon = GradientMonitor(d)
    for g in ([1.0, 0.0], [0.0, 3.0]):  # norms 1 and 3: mean 2, population std 1
        mon.observe(torch.tensor(g))
    s = mon.summary()
    assert s["gradient_stability"] == pytest.approx(1 / (1 + 1 / 2))
    assert s["directional_alignment"] == pytest.approx((1.0 + 0.0) / 2)
    assert s["grad_cos_consecutive"] == pytest.approx(0.0)


def test_constant_gradient_norm_is_perfectly_stable_and_aligned():
    mon = GradientMonitor(torch.tensor([0.0, 2.0]))
    for _ in range(3):
        mon.observe(torch.tensor([0.0, 5.0]))
    s = mon.summary()
    assert s["gradient_stability"] == 1.0 and s["directional_alignment"] == pytest.approx(1.0)


def test_non_finite_and_zero_gradients_never_make_a_metric_nan():
    mon = GradientMonitor(torch.tensor([1.0, 0.0]))
    assert mon.observe(torch.tensor([float("nan"), 1.0])) == {}
    mon.observe(torch.tensor([0.0, 0.0]))
    mon.observe(torch.tensor([2.0, 0.0]))
    s = mon.summary()
    assert all(math.isfinite(s[k]) for k in ("gradient_stability", "directional_alignment"))
    assert s["grad_steps_measured"] == 2


def test_official_metrics():
    assert f1_macro([0, 1, 2, 2], [0, 1, 2, 1], 3) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert f1a([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)
    assert exact_match([1, 0, 1, 1], [1, 0, 0, 1], ["q1", "q1", "q2", "q2"]) == pytest.approx(0.5)
    assert majority_baseline([1, 1, 0], [1, 0, 0, 0]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        task_metrics(["bleu"], [0], [0], 2, [None])

"""The metric-sampling study behind metrics.every: sub-samples of committed runs' metric traces, compared with the
all-points value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradft.bench import metrics as bm

RUNS = Path(__file__).resolve().parent.parent / "results" / "estimators"


def test_stability_is_one_for_constant_norms_and_drops_with_their_spread():
    assert bm.stability([2.0, 2.0, 2.0]) == 1.0
    assert bm.stability([1.0, 3.0]) == pytest.approx(1 / 1.5)


def test_all_points_deviate_by_zero_and_a_coarser_stride_measures_fewer_points(tmp_path):
    if not RUNS.is_dir():
        pytest.skip("no committed runs with metric traces")
    res = bm.main(["--root", str(RUNS), "--out", str(tmp_path / "m.json")])
    one, two = res["strides"][0], res["strides"][1]
    assert one["rms_dev_stability"] == one["rms_dev_alignment"] == 0.0
    assert two["points_per_run"] == pytest.approx(one["points_per_run"] / 2, rel=0.2)
    assert two["rms_dev_alignment"] > 0 and res["runs"] >= 2
    assert json.loads((tmp_path / "m.json").read_text())["runs"] == res["runs"]

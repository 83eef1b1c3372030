"""The compute accounting behind the budget: every finished run's wall time, summed per grid and per tuning study
(its trials together), from the smoke grid's real results.json files."""

from __future__ import annotations

import json
import shutil

import pytest

from gradft import compute


def test_wall_time_is_summed_per_grid_and_per_study_with_its_trials_together(smoke_grid, tmp_path, capsys):
    root = tmp_path / "results"
    shutil.copytree(smoke_grid / "smoke", root / "minilm" / "smoke")
    cell = root / "minilm" / "smoke" / "cb" / "ours" / "k32" / "s0"
    for trial in ("trial_0", "trial_3"):  # a study's runs: <study>/trial_<n>/<task>/s<seed>
        shutil.copytree(cell, root / "tuning" / "minilm" / "tune_x" / trial / "cb" / "s0")
    seconds = {p: json.loads(p.read_text())["wall_time_s"] for p in (root / "minilm").rglob("results.json")}
    trees = compute.spent(root)
    assert set(trees) == {"minilm/smoke", "tuning/minilm/tune_x"}
    assert trees["minilm/smoke"]["runs"] == 4 == len(seconds)
    assert trees["minilm/smoke"]["worker_hours"] == pytest.approx(sum(seconds.values()) / 3600)
    one = json.loads((cell / "results.json").read_text())["wall_time_s"]
    assert trees["tuning/minilm/tune_x"]["runs"] == 2
    assert trees["tuning/minilm/tune_x"]["worker_hours"] == pytest.approx(2 * one / 3600)
    assert trees["minilm/smoke"]["models"] == {"tiny_bert"} and trees["minilm/smoke"]["precisions"] == {"fp32"}
    assert compute.main([str(root), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert f"| tuning/minilm/tune_x | 2 | {2 * one / 3600:.2f} | {one / 3600:.2f} |" in out

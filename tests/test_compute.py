"""The compute accounting behind the budget: every finished run's wall time, summed per grid and per tuning study
(its trials together) and per hardware, from the smoke grid's real results.json files."""

from __future__ import annotations

import json
import shutil

import pytest

from gradft import tracking
from gradft.experiments import compute


def test_wall_time_is_summed_per_grid_and_per_study_with_its_trials_together(smoke_grid, tmp_path, capsys):
    root = tmp_path / "results"
    shutil.copytree(smoke_grid / "smoke", root / "minilm" / "smoke")
    cell = root / "minilm" / "smoke" / "cb" / "ours" / "k32" / "s0"
    one = json.loads((cell / "results.json").read_text())["wall_time_s"]
    for i, trial in enumerate(("trial_0", "trial_3")):  # a study's runs: <study>/trial_<n>/<task>/s<seed>
        run = root / "tuning" / "minilm" / "tune_x" / trial / "cb" / "s0"
        shutil.copytree(cell, run)
        r = json.loads((run / "results.json").read_text())  # two trainings of the run: their times differ
        (run / "results.json").write_text(json.dumps({**r, "wall_time_s": one + i}))
    seconds = {p: json.loads(p.read_text())["wall_time_s"] for p in (root / "minilm").rglob("results.json")}
    hw = json.loads((cell / "results.json").read_text())["env"]["hardware"]  # the processor this test runs on
    trees = compute.spent(root)
    assert set(trees) == {("minilm/smoke", hw), ("tuning/minilm/tune_x", hw)}
    smoke, study = trees[("minilm/smoke", hw)], trees[("tuning/minilm/tune_x", hw)]
    assert smoke["runs"] == 4 == len(seconds)
    assert smoke["worker_hours"] == pytest.approx(sum(seconds.values()) / 3600)
    assert study["runs"] == 2
    assert study["worker_hours"] == pytest.approx((2 * one + 1) / 3600)
    assert smoke["models"] == {"tiny_bert"} and smoke["precisions"] == {"fp32"}
    assert compute.main([str(root), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert f"| tuning/minilm/tune_x | {hw} | 2 | {(2 * one + 1) / 3600:.2f} | {(2 * one + 1) / 7200:.2f} |" in out


def test_a_copied_run_is_counted_once_where_it_first_appears(smoke_grid, tmp_path):
    """A grid cell adopted from a sibling grid, or a run a retried sweep trial reused, is a byte-identical copy of
    its results.json: the same computation, so its time is not spent twice."""
    root = tmp_path / "results"
    cell = smoke_grid / "smoke" / "cb" / "ours" / "k32" / "s0"
    for trial in ("trial_5", "trial_7"):  # trial 7 retried trial 5 and copied its finished run
        shutil.copytree(cell, root / "tuning" / "minilm" / "tune_x" / trial / "cb" / "s0")
    (study,) = compute.spent(root).values()
    assert study["runs"] == 1
    assert study["worker_hours"] == pytest.approx(json.loads((cell / "results.json").read_text())["wall_time_s"]
                                                  / 3600)


def test_runs_on_other_hardware_are_counted_apart_and_gpu_rows_have_no_machine_hours(smoke_grid, tmp_path, capsys):
    root = tmp_path / "results"
    shutil.copytree(smoke_grid / "smoke", root / "minilm" / "smoke")
    cells = sorted((root / "minilm" / "smoke").rglob("results.json"))
    r = json.loads(cells[0].read_text())
    r["env"] = {**r["env"], "device": "cuda", "hardware": "NVIDIA H200"}  # one cell as a lent GPU records it
    cells[0].write_text(json.dumps(r))
    old = json.loads(cells[1].read_text())
    del old["env"]  # a result from before env was recorded
    cells[1].write_text(json.dumps(old))
    trees = compute.spent(root)
    assert trees[("minilm/smoke", "NVIDIA H200")]["runs"] == 1 and trees[("minilm/smoke", "NVIDIA H200")]["gpu"]
    assert trees[("minilm/smoke", tracking.CPU_BEFORE_ENV)]["runs"] == 1
    assert sum(t["runs"] for t in trees.values()) == 4
    assert compute.main([str(root)]) == 0
    gpu_row = r["wall_time_s"] / 3600
    assert f"| minilm/smoke | NVIDIA H200 | 1 | {gpu_row:.2f} | — |" in capsys.readouterr().out


def test_an_adopted_cell_is_counted_in_the_grid_it_ran_in_not_the_one_that_adopted_it(smoke_grid, tmp_path):
    """Figure 2 adopts the answer grid's k = 32 cells; "signal_figure2_x" sorts before "signal_x", so without the
    grid's own record of the adoption the copy would take the hours of the run it copied."""
    root = tmp_path / "results"
    rel = "cb/ours/k32/s0"
    source = root / "minilm" / "signal_x" / rel
    shutil.copytree(smoke_grid / "smoke" / rel, source)
    copy_grid = root / "minilm" / "signal_figure2_x"
    shutil.copytree(source, copy_grid / rel)
    event = {"time": 0.0, "event": "adopt", "cell": rel, "pid": 1, "host": "vm", "source": str(source)}
    (copy_grid / "runs.jsonl").write_text(json.dumps(event) + "\n" + '{"cut by a cra')
    trees = compute.spent(root)
    assert {tree for tree, _ in trees} == {"minilm/signal_x"}
    (tree,) = trees.values()
    assert tree["runs"] == 1

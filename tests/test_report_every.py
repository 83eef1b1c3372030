"""``make report`` (``python -m gradft.report.every``): every grid under results/<setting>/ to its report folder, the
tuning tree never taken for a grid (a glob of the Makefile's once did, and stopped the whole rebuild)."""

from __future__ import annotations

import shutil
from pathlib import Path

from gradft.report import every


def test_each_grid_maps_to_its_report_folder_and_the_tuning_tree_is_no_grid(tmp_path):
    results, exp = tmp_path / "results", tmp_path / "conf" / "experiment"
    for d in ("minilm/table1_minilm", "minilm/signal_minilm", "minilm/signal_figure2_minilm", "minilm/figure3_minilm",
              "smollm2/figure2_smollm2", "minilm/guidance_fix_minilm", "tuning/signal_minilm/signal_minilm_full"):
        (results / d).mkdir(parents=True)
    (results / "minilm" / "table1_notes.txt").write_text("a file, not a grid")
    exp.mkdir(parents=True)
    (exp / "signal_minilm.yaml").write_text("# @package _global_\n")
    jobs = every.plan(results, tmp_path / "out", exp)
    assert [(j.root.relative_to(results).as_posix(), j.out.relative_to(tmp_path / "out").as_posix(),
             j.tuning.name if j.tuning else None, j.all_tasks) for j in jobs] == [
        ("minilm/table1_minilm", "minilm", None, False),
        ("smollm2/figure2_smollm2", "smollm2/figure2", None, False),
        ("minilm/figure3_minilm", "minilm/figure3", None, False),
        ("minilm/signal_figure2_minilm", "minilm/signal_figure2", None, True),
        ("minilm/signal_minilm", "minilm/signal", "signal_minilm.yaml", True),
    ]
    assert every.figure3_roots(results) == [results / "minilm" / "figure3_minilm"]


def test_make_reports_rebuild_runs_beside_a_tuning_tree_of_results(smoke_grid, tmp_path):
    """The real reports from the smoke grid's results, with a study's results.json files under results/tuning/ that
    match the signal glob: every report is written, none for the studies."""
    results = tmp_path / "results"
    shutil.copytree(smoke_grid / "smoke", results / "minilm" / "table1_minilm")
    shutil.copytree(smoke_grid / "smoke", results / "tuning" / "signal_minilm" / "signal_minilm_full" / "trial_0")
    out = tmp_path / "reports"
    assert every.main([str(results), "--out", str(out), "--experiments", str(tmp_path / "none")]) == 0
    written = {p.relative_to(out).as_posix() for p in Path(out).rglob("*.md")}
    assert "minilm/table1.md" in written
    assert not any(p.startswith("tuning") for p in written)


def test_no_grid_at_all_is_an_error_not_an_empty_rebuild(tmp_path, capsys):
    (tmp_path / "results" / "tuning" / "signal_x").mkdir(parents=True)
    assert every.main([str(tmp_path / "results"), "--out", str(tmp_path / "out")]) == 1
    assert "no grid under" in capsys.readouterr().err

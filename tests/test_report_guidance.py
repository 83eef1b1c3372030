"""Issue 27's table (``gradft.report.guidance``): each number is the seed mean of what the cells' results.json say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradft.report.guidance import collect, main, table


def _write(root: Path, grid: str, method: str, seed: int, tau: float, g: float, hits: int | None, acc: float) -> None:
    stats = {"tau_mean": tau, "grad_norm_mean": g, "hv_ratio_mean": 2.0 * seed, "guided_steps": 40}
    if hits is not None:
        stats.update(trust_region_hits=hits, shift_ratio_mean=1.0)
    r = {"guidance_stats": stats, "metrics": {"accuracy": acc},
         "history": {"train/loss": [1.0] * 36 + [0.5, 0.6, 0.7, 0.8]}}
    d = root / "minilm" / f"{grid}_minilm" / "cb" / method / "k32" / f"s{seed}"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps(r))


def test_the_table_averages_each_variant_over_its_seeds_and_keeps_version_one_apart(tmp_path):
    for seed in (100, 101):
        _write(tmp_path, "table1", "ours", seed, tau=1e12 * (seed - 99), g=2.0, hits=None, acc=0.4)
        acc = 0.5 + (seed - 100) / 10
        _write(tmp_path, "guidance_fix", "ours", seed, tau=3.0, g=1.5, hits=10 * (seed - 99), acc=acc)
        _write(tmp_path, "guidance_fix", "ours_update", seed, tau=2.0, g=2.0, hits=0, acc=0.6)
    _write(tmp_path, "table1", "ours_mag", 100, tau=1.0, g=1.0, hits=None, acc=0.1)  # an ablation: not version 1's ours
    cells = collect(tmp_path, "minilm", ["cb"])
    assert len(cells[("cb", "version 1 (pre-fix)")]) == 2
    fixed = cells[("cb", "hessian, fixed, κ = 1")]
    assert [c["tau_ratio"] for c in fixed] == [2.0, 2.0]
    assert [c["trust"] for c in fixed] == [0.25, 0.5]
    assert fixed[0]["loss"] == pytest.approx(0.65)  # the last 4 steps: one epoch of 32 shots in batches of 8
    text = table(cells)
    assert "| cb | hessian, fixed, κ = 1 | 2 | 2 | 201 | 1 | 38 ± 18 | 0.650 ± 0.000 | 55.0 ± 7.1 |" in text
    assert "| cb | version 1 (pre-fix) | 2 | 7.5e+11 | 201 | 201 | — | 0.650 ± 0.000 | 40.0 ± 0.0 |" in text
    assert "hessian, fixed, no trust region" not in text  # no cells, no row


def test_no_cells_is_an_error_naming_the_grid_to_run(tmp_path):
    with pytest.raises(SystemExit, match="guidance_fix_minilm"):
        main(["--setting", "minilm", "--results", str(tmp_path)])

"""The estimator table of docs/guidance.md: runs paired with the exact reference over (task, seed), differences with
CIs, and the "within noise" verdict that picks the default — from the committed estimator runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gradft.report import estimators as rep

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "results" / "estimators"


@pytest.fixture
def tree(tmp_path) -> Path:
    if not (RUNS / rep.REFERENCE).is_dir():
        pytest.skip("no committed estimator runs")
    dst = tmp_path / "estimators"
    shutil.copytree(RUNS, dst, ignore=shutil.ignore_patterns("wandb"))
    return dst


def test_every_estimator_is_paired_with_the_exact_reference_on_the_same_cells(tree, tmp_path):
    rows = {r["hvp"]: r for r in rep.table(rep.collect(tree), {})}
    assert next(iter(rows)) == rep.REFERENCE and rows[rep.REFERENCE]["within_noise"] is None
    for hvp, r in rows.items():
        if hvp == rep.REFERENCE:
            continue
        assert r["accuracy_diff"]["n_pairs"] == min(r["n"], rows[rep.REFERENCE]["n"]) >= 2
        d = r["alignment_diff"]
        assert d["ci_low"] <= d["mean_diff"] <= d["ci_high"]
    out = tmp_path / "est.md"
    assert rep.main(["--root", str(tree), "--bench", str(tmp_path / "none.json"), "--out", str(out)]) == 0
    assert out.read_text().count("\n| `") == len(rows)


def test_a_shifted_accuracy_is_no_longer_within_noise(tree):
    runs = rep.collect(tree)
    cand = next(h for h in runs if h != rep.REFERENCE)
    for path in tree.glob(f"{cand}/**/results.json"):  # every cell of one estimator 20 points better
        r = json.loads(path.read_text())
        r["metrics"]["accuracy"] += 0.2
        path.write_text(json.dumps(r))
    row = next(r for r in rep.table(rep.collect(tree), {}) if r["hvp"] == cand)
    assert row["accuracy_diff"]["ci_low"] > 0.15 and row["within_noise"] is False

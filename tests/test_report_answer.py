"""The answer's short table (issue 28, item 7), read from a synthetic results.json tree by the real
``gradft.report.build``: both readings of the method each tested against every tuned baseline in one Holm family,
the differences to LoRA and full paired over (task, seed), divergence counted."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradft.experiments.stats import holm, paired_comparison
from gradft.report import build as report
from gradft.report.answer import answer, fmt_p
from tests.test_report_outcomes import md_row, write_run

TASKS = ("cb", "rte")
SEEDS = (0, 1, 2)
# method -> accuracy offset; each (task, seed) cell adds the same per-cell noise to every method (a paired design)
OFFSET = {"full": 0.02, "adapter": 0.0, "lora": 0.05, "prompt": -0.03, "ours": 0.01, "ours-update": 0.06}


def accuracy(method: str, task: str, seed: int) -> float:
    rng = np.random.default_rng(hash((task, seed)) % 2**32)
    return 0.6 + OFFSET[method] + float(rng.normal(0, 0.03)) + 0.01 * seed * (method == "ours-update")


@pytest.fixture
def grid(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = tmp_path / "grid"
    for m in OFFSET:
        for t in TASKS:
            for s in SEEDS:
                write_run(root, t, m, s, accuracy(m, t, s), final_train_loss=0.2)
    return root


def test_the_answer_tests_both_readings_against_every_baseline_in_one_holm_family(grid, tmp_path):
    report.report(grid, tmp_path / "out")
    md = (tmp_path / "out" / "answer.md").read_text()
    cells = {m: {(t, s): accuracy(m, t, s) for t in TASKS for s in SEEDS} for m in OFFSET}
    family = [(g, b) for g in ("ours", "ours-update") for b in ("full", "adapter", "lora", "prompt")]
    raw = [paired_comparison(cells[g], cells[b])["p_ttest"] for g, b in family]
    want = dict(zip(family, holm(raw), strict=True))
    assert "Holm-corrected over the 8 comparisons" in md
    row = md_row(md, "ours-update")
    diff = 100 * (np.mean(list(cells["ours-update"].values())) - np.mean(list(cells["lora"].values())))
    ci = paired_comparison(cells["ours-update"], cells["lora"])  # the same bootstrap (fixed seed): the same CI
    assert row[2] == (f"{diff:+.1f} [{100 * ci['ci_low']:+.1f}, {100 * ci['ci_high']:+.1f}] "
                      f"(p {fmt_p(want[('ours-update', 'lora')])})")
    assert want[("ours-update", "lora")] >= paired_comparison(cells["ours-update"], cells["lora"])["p_ttest"]
    # a baseline against a baseline is outside the family: its p is the uncorrected one, marked
    p_full_lora = paired_comparison(cells["full"], cells["lora"])["p_ttest"]
    assert md_row(md, "full")[2].endswith(f"(p {fmt_p(p_full_lora)}†)")
    assert md_row(md, "lora")[2] == "—" and md_row(md, "full")[3] == "—"
    # the whole family is listed (the short table shows only the LoRA and full columns), each with its Holm p
    listed = [r for r in md.split("The Holm family")[1].splitlines() if r.startswith("| ours")]
    rows = {tuple(c.strip() for c in r.strip("|").split("|"))[:2]: r for r in listed}
    assert set(rows) == set(family)
    for (g, b), p in want.items():
        assert rows[(g, b)].rstrip().endswith(f"| {fmt_p(p)} |"), rows[(g, b)]


def test_a_diverged_run_is_counted_in_the_answer_and_scored_as_the_majority(grid, tmp_path):
    bad = grid / "rte" / "ours" / "k32" / "s1"
    (bad / "results.json").unlink()
    (bad / "error.json").write_text('{"diverged": true, "error": "NonFiniteError: 4 steps", "guidance_version": 2, '
                                    '"guidance": "structured", "method": "ours", "task": "rte", "shots": 32, '
                                    '"seed": 1, "data_seed": 1, "model": "minilm"}')
    report.report(grid, tmp_path / "out")
    row = md_row((tmp_path / "out" / "answer.md").read_text(), "ours")
    assert row[4] == "1/6 (17 %)"


def test_fewer_than_two_pairs_leave_the_p_value_undefined_not_zero():
    recs = [{"method": m, "task": "cb", "seed": 0, "metrics": {"accuracy": a}, "final_train_loss": 0.1}
            for m, a in (("lora", 0.6), ("ours", 0.7))]
    out = answer(recs)
    t = out["tests"][("ours", "lora")]
    assert t["n_pairs"] == 1 and math.isnan(t["p_holm"])
    assert "+10.0 (p —)" in out["markdown"]


def test_the_answer_closes_with_the_constant_guesses_a_method_must_beat(grid, tmp_path):
    from tests.test_report_outcomes import MAJORITY

    report.report(grid, tmp_path / "out")
    md = (tmp_path / "out" / "answer.md").read_text()
    per_task = [np.mean([MAJORITY.get((t, s), 0.5) for s in SEEDS]) for t in TASKS]
    assert md_row(md, "*train-pool majority*")[1] == f"{100 * np.mean(per_task):.1f}"
    assert md_row(md, "*eval majority (needs eval labels)*")[1] == "60.0"

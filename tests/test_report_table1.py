"""Table 1's statistics: a CI per method, paired comparisons of ours with the four baselines corrected by Holm,
ablations compared with ours, the per-task difference plot, and the tuning block (records built in the test: the
report is a pure function of results.json records)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from gradft.report.table1 import table1, tuning_lines

TASKS = ["boolq", "cb", "copa", "multirc", "rte", "wic"]
SHIFT = {"full": -0.02, "adapter": 0.0, "lora": -0.06, "prompt": -0.10, "ours": 0.0, "ours-mag": -0.04}


def records(seeds=range(100, 105)) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for task in TASKS:
        for seed in seeds:
            level = 0.6 + 0.02 * rng.standard_normal()  # shared by every method in this (task, seed): pairing
            for m, shift in SHIFT.items():
                acc = level + shift + 0.01 * rng.standard_normal()
                out.append({"method": m, "task": task, "seed": seed, "data_seed": seed, "shots": 32, "steps": 80,
                            "model": "minilm", "eval_examples": 100,
                            "metrics": {"accuracy": acc, "gradient_stability": 0.8, "directional_alignment": 0.3,
                                        "baseline_train_majority": 0.5, "baseline_chance": 0.5,
                                        "baseline_eval_majority": 0.55}})
    return out


def test_holm_corrects_the_four_baseline_comparisons_and_ablations_are_compared_with_ours(tmp_path):
    t = table1(records(), tmp_path, tmp_path)
    holm = {b: s for (m, b), s in t["tests"].items() if s["family"] == "holm"}
    assert sorted(holm) == ["adapter", "full", "lora", "prompt"] and all(m == "ours" for m, _ in t["tests"]
                                                                           if _ in holm)
    for s in holm.values():
        assert s["p_ttest"] <= s["p_ttest_holm"] <= 1 and s["n_pairs"] == 30
    assert holm["prompt"]["ci_low"] > 0.08 and holm["lora"]["ci_low"] > 0.04  # ours clearly above both
    assert holm["adapter"]["ci_low"] < 0 < holm["adapter"]["ci_high"]  # no difference built in: CI straddles 0
    smallest = min(holm, key=lambda b: holm[b]["p_ttest"])
    assert holm[smallest]["p_ttest_holm"] == pytest.approx(min(1.0, 4 * holm[smallest]["p_ttest"]))
    abl = t["tests"][("ours-mag", "ours")]
    assert abl["family"] == "ablation" and abl["mean_diff"] == pytest.approx(-0.04, abs=0.01)
    with open(tmp_path / "table1_paired.csv") as f:
        assert {r["family"] for r in csv.DictReader(f)} == {"holm", "ablation"}
    assert (tmp_path / "paired_diffs.png").stat().st_size > 10_000


def test_each_method_row_has_a_ci_around_its_average(tmp_path):
    t = table1(records(), tmp_path, tmp_path)
    rows = {r[0]: dict(zip(t["header"], r, strict=True)) for r in t["rows"]}
    for m in SHIFT:
        r = rows[m]
        assert r["avg_acc_ci_low"] < r["avg_acc_mean"] < r["avg_acc_ci_high"]
        assert r["avg_acc_ci_high"] - r["avg_acc_ci_low"] < 0.1
    assert "| ours | 60." in t["markdown"] and "Holm p (t)" in t["markdown"]


def test_tuning_block_prints_values_ranges_budget_and_edge_warnings():
    tuning = {"partial": False, "written": "2026-12-02 10:00",
              "lora": {"n_trials": 8, "complete": 5, "pruned": 3, "failed": 1, "best": {"method.lr": 0.00249},
                       "space": {"method.lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True}},
                       "select_accuracy": 0.553, "at_edge": {}},
              "full": {"n_trials": 8, "complete": 8, "pruned": 0, "failed": 0, "best": {"method.lr": 1e-3},
                       "space": {"method.lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}},
                       "select_accuracy": 0.5, "at_edge": {"method.lr": "high"}}}
    text = "\n".join(tuning_lines(tuning))
    assert "| lora | 8 (5 / 3 / 1) | method.lr=0.00249 | method.lr [0.0001, 0.03] log | 55.3 | — |" in text
    assert "method.lr at the high end" in text and "PARTIAL" not in text
    assert "PARTIAL" in "\n".join(tuning_lines({**tuning, "partial": True}))


def test_a_table_from_part_of_its_grid_says_how_many_of_the_planned_cells_it_has(tmp_path):
    from gradft.report.build import _tuning, planned_at

    grid_file = tmp_path / "t1.yaml"  # as gradft.experiments.tuned writes it: 6 tasks × 6 methods × 5 seeds
    grid_file.write_text("grid:\n  axes:\n    task: [" + ", ".join(TASKS) + "]\n    method: [" + ", ".join(SHIFT)
                         + "]\n    shots: [32, 256]\n    seed: [100, 101, 102, 103, 104]\ntuning:\n  written: now\n")
    node = planned_at(_tuning(grid_file), tmp_path, 32)
    assert node["planned_cells"] == 180  # per shot count: the table is at one k
    assert "| planned" not in "\n".join(tuning_lines(node))  # the grid's plan is no row of the tuning block
    part = table1(records(seeds=[100]), tmp_path, tmp_path, node)["markdown"]
    assert "**Partial grid: 36 of the 180 planned cells have results**" in part
    assert "Partial grid" not in table1(records(), tmp_path, tmp_path, node)["markdown"]
    # cells the grid skipped as infeasible (pool too small) are not planned: here 2 at k=256, none at k=32
    (tmp_path / "skipped.json").write_text('[{"task": "cb", "method": "ours", "shots": 256, "seed": 100},'
                                           ' {"task": "cb", "method": "full", "shots": 256, "seed": 100}]')
    assert planned_at(_tuning(grid_file), tmp_path, 256)["planned_cells"] == 178
    assert planned_at(_tuning(grid_file), tmp_path, 32)["planned_cells"] == 180


def test_the_table_says_how_many_cells_ran_on_which_hardware(tmp_path):
    recs = records()
    for i, r in enumerate(recs):  # a grid finished on a lent GPU after it started on the CPU
        if i % 3 == 0:
            r["env"] = {"device": "cuda", "hardware": "NVIDIA H200"}
    md = table1(recs, tmp_path, tmp_path)["markdown"]
    gpu = sum(1 for r in recs if r.get("env"))
    assert f"Ran on: {len(recs) - gpu} on the 2-core CPU (before env was recorded), {gpu} on NVIDIA H200." in md


def test_cells_that_diverged_are_named_not_silently_left_out(tmp_path):
    def cell(rel: str, error: str, finished: bool = False) -> None:
        d = tmp_path / rel
        d.mkdir(parents=True)
        (d / "error.json").write_text(f'{{"error": "{error}", "diverged": true}}')
        if finished:  # a later retry finished the cell: no longer missing
            (d / "results.json").write_text("{}")

    assert "**Diverged" not in table1(records(), tmp_path / "out", tmp_path)["markdown"]
    cell("cb/ours_init/k32/s101", "NonFiniteError('4 steps had a non-finite loss')")
    cell("rte/ours/k32/s100", "NonFiniteError('4 steps had a non-finite loss')", finished=True)
    cell("wic/lora/k32/s100", "RuntimeError('CUDA out of memory')")  # a crash, retried by the grid: not an outcome
    md = table1(records(), tmp_path / "out", tmp_path)["markdown"]
    assert "**Diverged, no result** (1 cell: non-finite losses" in md and "cb/ours_init/k32/s101." in md
    assert "rte/ours" not in md and "wic/lora" not in md


def test_a_partial_row_shows_its_seed_count_and_its_ci_resamples_only_the_seeds_its_mean_has(tmp_path):
    recs = [r for r in records(seeds=[100, 101, 102])
            if not (r["method"] == "ours" and r["seed"] != 100 and r["task"] == "wic")  # 1 complete seed of 3
            and not (r["method"] == "lora" and r["seed"] == 102 and r["task"] == "cb")]  # 2 complete seeds of 3
    t = table1(recs, tmp_path, tmp_path)
    rows = {r[0]: dict(zip(t["header"], r, strict=True)) for r in t["rows"]}
    assert rows["ours"]["n_seeds"] == 1 and np.isnan(rows["ours"]["avg_acc_ci_low"])  # no CI from one seed
    lora = rows["lora"]
    assert lora["n_seeds"] == 2 and lora["avg_acc_ci_low"] <= lora["avg_acc_mean"] <= lora["avg_acc_ci_high"]
    line: dict[str, str] = {}
    for ln in t["markdown"].splitlines():  # the first table's row per method (the paired table repeats names)
        if ln.startswith("| "):
            line.setdefault(ln.split(" | ")[0].strip("| "), ln)
    assert "(n=2)" in line["lora"].split(" | ")[1] and "(n=2)" in line["lora"].split(" | ")[6]  # avg and cb
    assert "(n=1)" in line["ours"].split(" | ")[1] and "(n=" not in line["full"]  # full has all 3 seeds


def test_cells_whose_guidance_ran_away_are_named_and_kept_in_the_means(tmp_path):
    recs = records(seeds=[100, 101])
    ours = [r for r in recs if r["method"] == "ours"]
    for r, ratio in zip(ours, [2.0, 5e4, None, 999.0], strict=False):  # healthy, runaway, non-finite, healthy
        r["guidance_stats"] = {"hv_ratio_mean": ratio, "guided_steps": 80}
    t = table1(recs, tmp_path, tmp_path)
    (line,) = [ln for ln in t["markdown"].splitlines() if ln.startswith("**Guidance ran away**")]
    named = [f"{r['task']}/ours/k32/s{r['seed']}" for r in ours[1:3]]
    assert "(2 cells:" in line and all(n in line for n in named) and "(5.0e+04)" in line and "non-finite" in line
    assert f"{ours[0]['task']}/ours/k32/s{ours[0]['seed']} " not in line
    assert {r[0]: r for r in t["rows"]}["ours"][1] == 2  # both seeds still count in the mean
    for r in ours:
        r["guidance_stats"] = {"hv_ratio_mean": 1.5}
    assert "ran away" not in table1(recs, tmp_path, tmp_path)["markdown"]


def test_the_header_explains_the_ablation_rows_only_when_the_table_has_them(tmp_path):
    table1(records(), tmp_path / "with", tmp_path)
    assert "Ablations: ours-mag = λ1 = 0" in (tmp_path / "with" / "table1.md").read_text()
    table1([r for r in records() if r["method"] != "ours-mag"], tmp_path / "without", tmp_path)
    assert "Ablations:" not in (tmp_path / "without" / "table1.md").read_text()

"""Figure 2's numbers (``figure2.md`` / ``.csv`` / ``_paired.csv``): the plot's points as mean ± std over seeds of the
average over the tasks present at every k, each reading of the method against each baseline at each k with Holm over
the whole figure, the
zero-shot column, and a partial grid that says how far it got (records built in the test: the report is a pure
function of results.json records)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from gradft.report.figure2 import figure2_table, planned_trained

SHOTS = [16, 64, 256]
LIFT = {64: 0.05}  # ours − lora: +5 points at k=64, level elsewhere


def records(seeds=(100, 101, 102, 103), methods=("lora", "ours")) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for task in ("cb", "rte", "wic"):
        for k in SHOTS:
            if task == "cb" and k == 256:  # CB's pool is too small for 256 shots
                continue
            for seed in seeds:
                level = 0.55 + 0.03 * rng.standard_normal()  # shared by both methods in this (task, k, seed): pairing
                for m in methods:
                    acc = level + (LIFT.get(k, 0.0) if m == "ours" else 0.0) + 0.002 * rng.standard_normal()
                    out.append({"method": m, "task": task, "seed": seed, "data_seed": seed, "shots": k, "steps": 40,
                                "model": "smollm2", "metrics": {"accuracy": acc, "baseline_train_majority": 0.5,
                                                                "baseline_chance": 0.5}})
    out += [{"method": "zero-shot", "task": t, "seed": 100, "data_seed": 100, "shots": 0, "steps": 0,
             "model": "smollm2", "metrics": {"accuracy": a}} for t, a in (("cb", 0.4), ("rte", 0.6), ("wic", 0.5))]
    return out


def rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_points_are_seed_means_of_the_average_over_the_tasks_present_at_every_k(tmp_path):
    recs = records()
    md = figure2_table(recs, tmp_path, tmp_path).read_text()
    avg = {(r["method"], int(r["shots"])): r for r in rows(tmp_path / "figure2.csv") if r["task"] == "avg"}
    for (m, k), r in avg.items():
        if m == "zero-shot":
            continue
        per_seed = [np.mean([x["metrics"]["accuracy"] for x in recs if (x["method"], x["shots"], x["seed"]) == (m, k, s)
                             and x["task"] in ("rte", "wic")]) for s in (100, 101, 102, 103)]  # cb: not at k=256
        assert float(r["acc_mean"]) == pytest.approx(np.mean(per_seed))
        assert float(r["acc_std"]) == pytest.approx(np.std(per_seed, ddof=1)) and r["n_seeds"] == "4"
    assert float(avg[("zero-shot", 0)]["acc_mean"]) == pytest.approx(0.55)  # rte 0.6, wic 0.5: the plot's tasks
    assert "Left out: cb (missing at some k)" in md
    assert "| Method | k=0 | k=16 | k=64 | k=256 |" in md
    assert "| zero-shot | 55.0 (n=1) | — | — | — |" in md
    per_task = {(r["method"], int(r["shots"]), r["task"]) for r in rows(tmp_path / "figure2.csv")}
    assert ("ours", 64, "cb") in per_task and ("ours", 256, "cb") not in per_task  # per task: every task it has


def test_ours_is_paired_with_each_baseline_at_each_k_and_holm_covers_the_whole_figure(tmp_path):
    figure2_table(records(methods=("lora", "ours", "ours-mag")), tmp_path, tmp_path)
    tests = {(r["baseline"], int(r["shots"])): r for r in rows(tmp_path / "figure2_paired.csv")
             if r["method"] == "ours"}
    # one comparison per k; zero-shot is no baseline, nor is an ablation (Table 1 pairs it with ours, Holm over 4)
    assert sorted(tests) == [("lora", k) for k in SHOTS]
    for (_, k), t in tests.items():
        assert t["n_pairs"] == "8"  # 2 tasks × 4 seeds
        assert float(t["mean_diff"]) == pytest.approx(LIFT.get(k, 0.0), abs=0.004)
        assert float(t["p_ttest"]) <= float(t["p_ttest_holm"]) <= min(1.0, 3 * float(t["p_ttest"]) + 1e-12)
    p64 = float(tests[("lora", 64)]["p_ttest"])  # the smallest of the 3 p-values: Holm multiplies it by 3
    assert float(tests[("lora", 64)]["p_ttest_holm"]) == pytest.approx(3 * p64) and 3 * p64 < 0.001
    assert float(tests[("lora", 16)]["p_ttest"]) > 0.001


def test_both_readings_meet_every_baseline_at_each_k_never_each_other_in_one_holm_family(tmp_path):
    md = figure2_table(records(methods=("full", "lora", "ours", "ours-update")), tmp_path, tmp_path).read_text()
    tests = {(r["method"], r["baseline"], int(r["shots"])): r for r in rows(tmp_path / "figure2_paired.csv")}
    assert sorted(tests) == sorted((g, b, k) for g in ("ours", "ours-update") for b in ("full", "lora") for k in SHOTS)
    p = {gbk: float(t["p_ttest"]) for gbk, t in tests.items()}
    order = sorted(p, key=p.get)  # Holm over all 12: the smallest p is multiplied by 12, the next by 11, ...
    running = 0.0
    for i, gbk in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * p[gbk]))
        assert float(tests[gbk]["p_ttest_holm"]) == pytest.approx(running)
    assert float(tests[("ours-update", "lora", 64)]["mean_diff"]) == pytest.approx(0.0, abs=0.004)  # no lift
    assert "## ours and ours-update − each baseline at each k" in md and "| ours-update | lora | 64 | 8 |" in md


def test_a_partial_grid_says_how_many_planned_cells_have_ended_counting_divergences(tmp_path):
    tuning = {"planned_shots": [0, *SHOTS], "planned_per_shots": 3 * 2 * 4}  # tasks × methods × seeds
    (tmp_path / "skipped.json").write_text(json.dumps([{"task": "cb", "method": m, "shots": 256, "seed": s}
                                                       for m in ("lora", "ours") for s in (100, 101, 102, 103)]))
    assert planned_trained(tuning, tmp_path) == 24 * 3 - 8  # k=0 plans no trained cell; skipped ones are not planned
    recs = records()
    assert "Partial grid" not in figure2_table(recs, tmp_path, tmp_path, tuning).read_text()
    gone = next(r for r in recs if (r["task"], r["method"], r["shots"], r["seed"]) == ("rte", "ours", 16, 100))
    md = figure2_table([r for r in recs if r is not gone], tmp_path, tmp_path, tuning).read_text()
    assert "**Partial grid: 63 of the 64 planned trained cells have ended**" in md
    cell = tmp_path / "rte" / "ours" / "k16" / "s100"  # the same cell, diverged: an outcome, the grid has ended
    cell.mkdir(parents=True)
    (cell / "error.json").write_text(json.dumps({"error": "NonFiniteError: loss is nan", "diverged": True}))
    md = figure2_table([r for r in recs if r is not gone], tmp_path, tmp_path, tuning).read_text()
    assert "Partial grid" not in md and "**Diverged, no result** (1 cell" in md


def test_each_task_gets_its_own_curve_over_the_k_its_pool_allows(tmp_path):
    """figure2_tasks.png: the averaged Figure 2 drops a task missing at some k (CB at 256); its panel keeps it."""
    from gradft.report.figure2 import figure2_tasks, task_points

    recs = records()
    pts = task_points(recs)
    assert sorted(pts) == ["cb", "rte", "wic"] and sorted(pts["cb"]) == ["lora", "ours"]
    assert [p[0] for p in pts["cb"]["ours"]] == [16, 64] and [p[0] for p in pts["rte"]["ours"]] == SHOTS
    want = np.mean([r["metrics"]["accuracy"] for r in recs
                    if (r["task"], r["method"], r["shots"]) == ("cb", "ours", 64)])
    assert pts["cb"]["ours"][1][1] == pytest.approx(want) and pts["cb"]["ours"][1][3] == 4  # 4 seeds
    assert figure2_tasks(recs, tmp_path).read_bytes().startswith(b"\x89PNG")
    assert figure2_tasks([r for r in recs if r["task"] == "rte"], tmp_path / "one") is None  # Figure 2 is that task


def test_the_header_gives_early_stoppings_caps_and_the_steps_run_not_the_caps_as_steps(tmp_path):
    assert "40 training steps." in figure2_table(records(), tmp_path, tmp_path).read_text()  # a fixed-length grid
    recs = [{**r, "steps": 80 if r["shots"] == 16 else 320, "steps_run": 24, "best_step": 8, "stopped_early": True}
            for r in records()]
    md = figure2_table(recs, tmp_path, tmp_path).read_text()
    assert "early stopping on the selection split (cap 80/320 steps; steps run: median 24" in md
    assert "80/320 training steps" not in md

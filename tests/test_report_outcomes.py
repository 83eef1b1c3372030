"""Every table shows what accuracy hides (issue 28, items 3 and 4): each method's final training loss, and divergence
counted, never dropped — a diverged cell enters the means and the paired tests as the train-pool majority's accuracy
of its (task, seed) cell, is named under the table, and sets the method's divergence rate; guided runs whose
guidance warned are counted as unstable. Synthetic results.json trees read by the real ``gradft.report.build``."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import yaml

from gradft.report import build as report

TASKS = ("cb", "rte")
SEEDS = (0, 1)
MAJORITY = {("cb", 0): 0.50, ("cb", 1): 0.52, ("rte", 0): 0.53, ("rte", 1): 0.47}  # train-pool majority per cell


def write_run(root, task, method, seed, acc, batch_size=None, **extra) -> None:
    d = root / task / method / "k32" / f"s{seed}"
    d.mkdir(parents=True)
    r = {"model": "minilm", "method": method, "task": task, "shots": 32, "seed": seed, "data_seed": seed,
         "steps": 40, "config_key": "synthetic",
         "metrics": {"accuracy": acc, "baseline_train_majority": MAJORITY.get((task, seed), 0.5),
                     "baseline_train_majority_f1_macro": 0.33, "baseline_chance": 0.5, "baseline_eval_majority": 0.6},
         **extra}
    (d / "results.json").write_text(json.dumps(r))
    cfg = {"seed": seed, "data_seed": seed, **({"trainer": {"batch_size": batch_size}} if batch_size else {})}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))


def table_rows(out) -> dict[str, dict[str, str]]:
    with open(out / "table1.csv", newline="") as f:
        return {r["method"]: r for r in csv.DictReader(f)}


def md_row(md: str, method: str) -> list[str]:
    return next(line for line in md.splitlines() if line.startswith(f"| {method} |")).split(" | ")


def test_the_loss_column_is_each_methods_mean_final_training_loss_recomputed_from_old_histories(tmp_path,
                                                                                                  monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = tmp_path / "grid"
    rng = np.random.default_rng(0)
    expected = []
    for task in TASKS:
        for seed in SEEDS:
            write_run(root, task, "lora", seed, 0.6, final_train_loss=0.1 + 0.1 * seed)  # new runs: recorded
            hist = list(rng.uniform(0.5, 2.0, size=40))
            bs = 4 if seed == 0 else None  # no trainer.batch_size in its config.yaml: 8, the default
            per_epoch = math.ceil(32 / (bs or 8))
            expected.append(float(np.mean(hist[-per_epoch:])))
            write_run(root, task, "full", seed, 0.6, batch_size=bs, history={"train/loss": hist})
    table = report.report(root, tmp_path / "out")
    mu, sd = float(np.mean(expected)), float(np.std(expected, ddof=1))
    assert md_row(table["markdown"], "full")[3] == f"{mu:.3f} ± {sd:.3f}"
    assert md_row(table["markdown"], "lora")[3] == f"{0.15:.3f} ± {np.std([0.1, 0.2, 0.1, 0.2], ddof=1):.3f}"
    assert table_rows(tmp_path / "out")["full"]["final_loss"] == f"{mu:.3f} ± {sd:.3f}"
    assert "| Final train loss |" in table["markdown"]


def test_a_diverged_cell_enters_the_mean_as_its_train_pool_majority_and_sets_the_divergence_rate(tmp_path,
                                                                                                 monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = tmp_path / "grid"
    acc = {("cb", 0): 0.70, ("cb", 1): 0.72, ("rte", 0): 0.66, ("rte", 1): 0.64}
    for (task, seed), a in acc.items():
        write_run(root, task, "lora", seed, a - 0.05)
        if (task, seed) == ("rte", 1):  # ours diverged here: a grid cell's error.json, no results.json
            d = root / task / "ours" / "k32" / f"s{seed}"
            d.mkdir(parents=True)
            (d / "error.json").write_text(json.dumps({"error": "NonFiniteError('4 steps had a non-finite loss')",
                                                      "diverged": True, "seed": seed, "data_seed": seed}))
        else:  # one guided run whose guidance health check warned: unstable
            warn = ["loss rose 3x over the last 10 steps"] if (task, seed) == ("cb", 0) else []
            write_run(root, task, "ours", seed, a, guidance_stats={"warnings": warn})
    table = report.report(root, tmp_path / "out")
    ours = {**acc, ("rte", 1): MAJORITY[("rte", 1)]}  # what its user would get: the train-pool majority
    seed_avgs = [np.mean([ours[(t, s)] for t in TASKS]) for s in SEEDS]
    rows = table_rows(tmp_path / "out")
    assert float(rows["ours"]["avg_acc_mean"]) == pytest.approx(np.mean(seed_avgs))
    assert rows["ours"]["n_seeds"] == "2"  # the diverged seed is not dropped from the average
    assert rows["ours"]["diverged"] == "1/4 (25 %)" and rows["lora"]["diverged"] == "0/4 (0 %)"
    assert rows["ours"]["unstable"] == "1/3 (33 %)" and rows["lora"]["unstable"] == "—"
    paired = table["tests"][("ours", "lora")]
    assert paired["n_pairs"] == 4
    assert paired["mean_diff"] == pytest.approx(np.mean([0.05, 0.05, 0.05, MAJORITY[("rte", 1)] - 0.59]))
    md = table["markdown"]
    assert "**Diverged, scored as the train-pool majority** (1 cell" in md and "rte/ours/k32/s1." in md
    assert "**Diverged, no result**" not in md
    assert md_row(md, "ours")[4:6] == ["1/4 (25 %)", "1/3 (33 %)"]


def test_figure2_shows_each_methods_final_loss_per_k_and_its_divergence_rate(tmp_path):
    from gradft.report.figure2 import figure2_table

    recs = []
    for k in (16, 64):
        for task in TASKS:
            for seed in SEEDS:
                for m, loss in (("lora", 0.1 * k / 16), ("ours", 0.5)):
                    gone = (m, k, task, seed) == ("ours", 64, "rte", 1)  # scored as its majority by the report
                    recs.append({"method": m, "task": task, "seed": seed, "data_seed": seed, "shots": k,
                                 "model": "minilm", "metrics": {"accuracy": MAJORITY[(task, seed)] if gone else 0.6},
                                 **({"diverged": True} if gone else {"steps": 40, "final_train_loss": loss})})
    md = figure2_table(recs, tmp_path, tmp_path).read_text()
    assert "| lora | 0.100 ± 0.000 | 0.400 ± 0.000 | 0/8 (0 %) |" in md
    assert "| ours | 0.500 ± 0.000 | 0.500 ± 0.000 | 1/8 (12 %) |" in md  # the diverged run has no loss to show


def test_figure3_scores_a_diverged_domain_cell_as_its_majority_with_loss_and_rate_columns(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = tmp_path / "grid"
    data = {"source": "files", "labels": ["no", "yes"]}  # a domain (table) task: Figure 3
    for seed in SEEDS:
        write_run(root, "overruling", "lora", seed, 0.8, data=data, final_train_loss=0.2)
        if seed == 1:
            d = root / "overruling" / "ours" / "k32" / "s1"
            d.mkdir(parents=True)
            (d / "error.json").write_text(json.dumps({"error": "NonFiniteError('nan')", "diverged": True}))
        else:
            write_run(root, "overruling", "ours", seed, 0.7, data=data, final_train_loss=0.6)
    report.report(root, tmp_path / "out")
    md = (tmp_path / "out" / "figure3.md").read_text()
    ours = next(line for line in md.splitlines() if "| minilm | ours |" in line and line.startswith("| overruling"))
    assert "| 60.0 ± 14.1 (1 of 2 diverged: scored as the majority) |" in ours  # 0.7 and its majority, 0.5
    assert "(1 of 2 diverged: scored as the majority)" in ours and "| 0.600 (n=1) |" in ours
    assert "| minilm | ours | 1/2 (50 %) | — |" in md and "| minilm | lora | 0/2 (0 %) | — |" in md
    assert "From 3 results.json and 1 diverged run(s) without one" in md

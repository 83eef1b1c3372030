"""The report from the smoke grid's real results.json files: Table 1 (md + csv) with every method row, the majority
baseline and finite numbers; paired tests with p-values in [0, 1]; the figures; W&B logging; no model code."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradft.experiments import grid
from gradft.report import build as report
from gradft.report import table1 as table1_mod

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def reported(smoke_grid, tmp_path_factory) -> tuple[Path, Path]:
    """The smoke grid (cb, rte × prompt, ours × seed 0; run once per test process, conftest), then the report of it."""
    out = tmp_path_factory.mktemp("smoke-reports")
    report.main(["--root", str(smoke_grid), "--out", str(out)])
    return smoke_grid, out


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_table_has_a_row_per_method_and_the_majority_baseline_with_finite_numbers(reported):
    _, out = reported
    table = {r["method"]: r for r in rows(out / "table1.csv")}
    assert list(table) == ["prompt", "ours", "baseline_train_majority", "baseline_chance", "baseline_eval_majority"]
    for method, r in table.items():
        keys = ["avg_acc_mean", "cb_acc_mean", "rte_acc_mean"]
        if not method.startswith("baseline_"):
            keys += ["stability_mean", "alignment_mean"]
        assert all(math.isfinite(float(r[k])) for k in keys), r
        assert 0 <= float(r["avg_acc_mean"]) <= 1
    md = (out / "table1.md").read_text()
    assert "Model **tiny_bert** with a **new classifier head**, **32** shots, seeds 0" in md
    assert "2 training steps" in md
    assert float(table["baseline_chance"]["cb_acc_mean"]) == pytest.approx(1 / 3)
    for name in ("| prompt |", "| ours |", "| train-pool majority |", "| chance (1/C) |", "| eval majority",
                 "ours vs each baseline", "| ours | prompt | 2 |"):
        assert name in md


def test_paired_test_p_values_are_probabilities(reported):
    _, out = reported
    (r,) = rows(out / "table1_paired.csv")
    assert (r["method"], r["baseline"], r["n_pairs"]) == ("ours", "prompt", "2")
    for k in ("p_ttest", "p_wilcoxon"):
        assert 0.0 <= float(r[k]) <= 1.0
    assert math.isfinite(float(r["mean_diff"]))


def test_paired_test_with_no_difference_gives_p_one_and_too_few_pairs_give_nan():
    same = {("cb", 0): 0.5, ("rte", 0): 0.6}
    assert table1_mod.paired(same, dict(same)) == {"n_pairs": 2, "mean_diff": 0.0, "p_ttest": 1.0, "p_wilcoxon": 1.0}
    one = table1_mod.paired({("cb", 0): 0.5}, {("cb", 0): 0.4, ("rte", 0): 0.1})
    assert one["n_pairs"] == 1 and math.isnan(one["p_ttest"]) and math.isnan(one["p_wilcoxon"])


def test_figures_are_written_and_non_empty_and_one_shot_count_draws_no_curve(reported):
    _, out = reported
    data = (out / "loss_curves.png").read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000
    assert not (out / "figure2.png").exists()  # the smoke grid has k = 32 only: a one-point "curve" says nothing


def test_report_logs_table_and_figures_to_wandb_offline(reported, tmp_path):
    root, _ = reported
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run([sys.executable, "-m", "gradft.report.build", "--root", str(root), "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0


def test_report_reads_results_only_and_never_imports_model_code():
    code = "import sys, gradft.report.build; assert not {'torch', 'transformers', 'gradft.run'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_zero_shot_and_lm_head_runs_are_rows_of_their_own_and_zero_shot_runs_once_per_task(tmp_path):
    root, out = tmp_path / "grid", tmp_path / "reports"
    args = ["smoke", "--out", str(root), "model=tiny_llama", "method=lora", "task=cb,copa", "shots=0,32",
            "head=classifier,lm"]
    p = grid.plan(args[0], args[3:], root)
    # zero-shot lives under the smoke grid's first method and seed, whichever method the axes are narrowed to
    assert sorted(c.rel for c in p.cells if c.shots == 0) == ["cb/prompt-lm/k0/s0", "copa/prompt-lm/k0/s0"]
    assert {s["head"] for s in p.skipped} == {"classifier"}  # a classifier head cannot run zero-shot
    assert grid.main(args) == 0
    report.main(["--root", str(root), "--out", str(out)])
    table = {r["method"]: r for r in rows(out / "table1.csv")}
    assert list(table)[:3] == ["zero-shot", "lora", "lora-lm"] and list(table)[3:] == list(table1_mod.BASELINES)
    assert table["zero-shot"]["stability_mean"] == ""  # no gradient measured at k=0
    assert all(0 <= float(table[m]["avg_acc_mean"]) <= 1 for m in ("zero-shot", "lora", "lora-lm"))
    assert (out / "figure2.png").read_bytes().startswith(PNG)
    (paired_row,) = rows(out / "table1_paired.csv")  # the LM head against its new-head twin, per (task, seed)
    assert (paired_row["method"], paired_row["baseline"], paired_row["n_pairs"]) == ("lora-lm", "lora", "2")


def test_a_table_of_lm_head_runs_alone_names_rows_by_method_so_ours_meets_its_baselines(tmp_path):
    """The SmolLM2 setting: every row is head=lm; the rows are plain method names (ours is compared with lora, Holm),
    the zero-shot row stays, and the header names the head."""
    root, out = tmp_path / "grid", tmp_path / "reports"
    assert grid.main(["smoke", "--out", str(root), "model=tiny_llama", "head=lm", "method=lora,ours", "task=cb",
                      "shots=0,32", "seed=0,1"]) == 0
    report.main(["--root", str(root), "--out", str(out)])
    assert [r["method"] for r in rows(out / "table1.csv")][:3] == ["zero-shot", "lora", "ours"]
    paired = {(r["method"], r["baseline"]): r for r in rows(out / "table1_paired.csv")}
    assert paired[("ours", "lora")]["family"] == "holm" and paired[("ours", "lora")]["n_pairs"] == "2"
    assert "prompt + pretrained LM head** (head=lm) in every row" in (out / "table1.md").read_text()
    assert "| zero-shot | " in (out / "figure2.md").read_text()  # Figure 2's numbers: the k = 0 column is zero-shot


def test_default_out_is_outputs_reports_never_the_committed_reports(reported, tmp_path, monkeypatch):
    root, _ = reported
    monkeypatch.chdir(tmp_path)
    report.main(["--root", str(root)])
    assert (tmp_path / "outputs" / "reports" / "table1.md").exists() and not (tmp_path / "reports").exists()


def test_results_of_two_models_make_one_table_per_model(reported, tmp_path):
    """A copy of the smoke results relabelled as another model: each model gets its own Table 1, none is mixed."""
    import json
    import shutil

    root, _ = reported
    both = tmp_path / "both"
    shutil.copytree(root, both / "a")
    for path in (both / "a").rglob("results.json"):
        r = json.loads(path.read_text())
        r["model"] = "other_model"
        path.write_text(json.dumps(r))
    shutil.copytree(root, both / "b")
    report.main(["--root", str(both), "--out", str(tmp_path / "out")])
    for model in ("tiny_bert", "other_model"):
        md = (tmp_path / "out" / model / "table1.md").read_text()
        assert f"Model **{model}**" in md and "From 4 results.json" in md


def test_seeds_restricts_the_table_to_the_seeds_given(reported, tmp_path):
    """A copy of the smoke results relabelled seed 7: --seeds 7 reads only the copy, an unknown seed is refused."""
    import json
    import shutil

    root, _ = reported
    both = tmp_path / "both"
    shutil.copytree(root, both / "s0")
    shutil.copytree(root, both / "s7")
    for path in (both / "s7").rglob("results.json"):  # and its config.yaml: a result is its config's (resultfile)
        path.write_text(json.dumps({**json.loads(path.read_text()), "seed": 7}))
        cfg = path.with_name("config.yaml")
        cfg.write_text(cfg.read_text().replace("\nseed: 0\n", "\nseed: 7\n"))
    report.main(["--root", str(both), "--out", str(tmp_path / "all")])
    assert "seeds 0, 7 " in (tmp_path / "all" / "table1.md").read_text()
    report.main(["--root", str(both), "--out", str(tmp_path / "one"), "--seeds", "7"])
    md = (tmp_path / "one" / "table1.md").read_text()
    assert "seeds 7 " in md and "From 4 results.json" in md
    with pytest.raises(SystemExit, match="with seeds \\[3\\]"):
        report.main(["--root", str(both), "--out", str(tmp_path / "none"), "--seeds", "3"])


def test_figure3_from_a_tiny_domain_grid_has_bars_and_the_three_baselines(tmp_path):
    root, out = tmp_path / "grid", tmp_path / "reports"
    assert grid.main(["figure3", "--out", str(root), "task=promise_nfr,overruling", "method=lora,ours", "seed=0,1",
                      "head=classifier", "model=tiny_bert", "trainer.steps=1", "eval.max_examples=16",
                      "logger.mode=disabled", "trainer.threads=1", "metrics.every=0"]) == 0
    tuned = tmp_path / "figure3_tiny.yaml"  # the tuning node `python -m gradft.experiments.tuned` writes
    tuned.write_text("tuning:\n  written: now\n  lora:\n    n_trials: 2\n    complete: 2\n    pruned: 0\n"
                     "    failed: 0\n    best: {method.lr: 0.0025}\n    space: {method.lr: {type: float, low: 0.0001, "
                     "high: 0.03, log: true}}\n    select_accuracy: 0.55\n    tasks: [cb, rte]\n")
    report.main(["--root", str(root), "--out", str(out), "--tuning", str(tuned)])
    assert (out / "figure3.png").read_bytes().startswith(PNG) and not (out / "table1.md").exists()
    md = (out / "figure3.md").read_text()
    assert "| promise_nfr (technical) | 16 | tiny_bert | lora |" in md and "| overruling (legal) | 16 |" in md
    assert "train-pool majority" in md and "chance" in md and "eval majority" in md
    assert "| tiny_bert | ours | lora | 4 |" in md  # paired over 2 tasks x 2 seeds
    assert "selection splits of cb, rte (not of these tasks" in md
    assert "| lora | 2 (2 / 0 / 0) | method.lr=0.0025 |" in md

    same = tmp_path / "same.yaml"  # issue 28's testbeds: tuned on the selection splits of the tasks shown
    same.write_text(tuned.read_text().replace("tasks: [cb, rte]", "tasks: [overruling, promise_nfr]"))
    untrained = tmp_path / "untrained.yaml"  # `tuned --untrained`: no study, nothing tuned
    untrained.write_text("tuning:\n  untrained: true\n  written: now\n  studies: [s_lora]\n")
    for f, want in ((same, "of overruling, promise_nfr (these tasks' own, carved from their train pools"),
                    (untrained, None)):
        report.main(["--root", str(root), "--out", str(tmp_path / f.stem), "--tuning", str(f)])
        md = (tmp_path / f.stem / "figure3.md").read_text()
        assert (want in md) if want else ("Hyperparameters" not in md and "None: these rows train nothing" in md)


def test_all_tasks_makes_table1_and_the_answer_of_a_domain_testbed_trained_with_early_stopping(tmp_path):
    """Issue 28's signal grids hold domain tasks: --all-tasks gives them Table 1 and answer.md (Figure 3 still
    drawn), and the header names the early-stopping rule and the steps run instead of a fixed step count."""
    root, out = tmp_path / "grid", tmp_path / "reports"
    assert grid.main(["figure3", "--out", str(root), "task=promise_nfr,overruling", "method=lora,ours", "seed=0,1",
                      "head=classifier", "model=tiny_bert", "eval.max_examples=16", "logger.mode=disabled",
                      "trainer.threads=1", "metrics.every=0", "data.select=pool", "data.select_size=40",
                      "trainer.stop=early", "trainer.patience=1", "eval.select_every=1", "trainer.steps=null",
                      "trainer.epochs=2", "trainer.max_steps=8"]) == 0
    report.main(["--root", str(root), "--out", str(out), "--all-tasks"])
    assert (out / "figure3.md").exists() and (out / "answer.md").exists()
    md = (out / "table1.md").read_text()
    assert "early stopping on the selection split (cap " in md and "steps run: median " in md
    assert "the tasks' eval splits" in md and "SuperGLUE" not in md.split("\n\n")[1]
    assert "| ours | " in (out / "answer.md").read_text()
    report.main(["--root", str(root), "--out", str(tmp_path / "plain")])  # without it: Figure 3 only, as before
    assert not (tmp_path / "plain" / "table1.md").exists()


def test_one_figure3_reads_each_settings_grid_together_and_table1_roots_stay_one_each(tmp_path, reported):
    common = ["task=promise_nfr", "method=lora,ours", "seed=0", "eval.max_examples=16", "logger.mode=disabled",
              "trainer.threads=1", "metrics.every=0", "trainer.steps=1"]
    roots = {"bert": tmp_path / "bert", "llama": tmp_path / "llama"}
    assert grid.main(["figure3", "--out", str(roots["bert"]), "model=tiny_bert", "head=classifier", *common]) == 0
    assert grid.main(["figure3", "--out", str(roots["llama"]), "model=tiny_llama", "head=lm", *common]) == 0
    out = tmp_path / "reports"
    report.main(["--root", str(roots["bert"]), "--root", str(roots["llama"]), "--out", str(out)])
    md = (out / "figure3.md").read_text()
    assert "| promise_nfr (technical) | 16 | tiny_bert | lora |" in md and "| tiny_llama | lora-lm |" in md
    assert f"under `{roots['bert']} + {roots['llama']}`" in md and "From 4 results.json" in md
    with pytest.raises(SystemExit, match="Figure 3 \\(domain tasks\\) only"):  # SuperGLUE results: one root each
        report.main(["--root", str(reported[0]), "--root", str(roots["bert"]), "--out", str(tmp_path / "x")])


def test_a_rebuilt_report_is_byte_identical_and_carries_no_build_time(reported, tmp_path):
    """A report is a function of the results alone: rebuilding it changes no byte (no "built at" stamp), so ``make
    report`` over unchanged committed results leaves git clean."""
    from datetime import date

    _, first = reported
    report.main(["--root", str(reported[0]), "--out", str(tmp_path)])
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for rel in files:
        assert (tmp_path / rel).read_bytes() == (first / rel).read_bytes(), rel
        if rel.suffix == ".md":
            assert f"{date.today():%Y-%m-%d}" not in (first / rel).read_text(), rel

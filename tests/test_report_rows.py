"""The domain-task report leaves nothing out silently (issue 31, item 6): a zero-shot run (k = 0) is a row recorded
as ``zero-shot`` (not the config's method), a diverged single run is a row (its ``error.json`` with ``diverged``),
the counts agree, and the domain sentence is true whatever the user's tasks are. Real tiny runs on a real domain
task; the diverged one through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT, make_cfg

from gradft.report import build as report
from gradft.run import run

TINY = ["trainer.steps=1", "eval.max_examples=8", "metrics.every=0", "logger.mode=disabled", "task=promise_nfr"]


def test_zero_shot_and_diverged_runs_are_rows_and_the_counts_agree(tmp_path, capsys):
    root = tmp_path / "runs"
    run(make_cfg("model=tiny_bert", "shots=8", *TINY, out=root / "trained"))
    run(make_cfg("model=tiny_llama", "head=lm", "shots=0", "method=lora", *TINY, out=root / "zero"))
    assert json.loads((root / "zero" / "results.json").read_text())["method"] == "zero-shot"  # no LoRA was applied
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "gradft", "model=tiny_bert", "shots=8", *TINY, "method=full",
                           "method.lr=1e30", "trainer.max_skipped=0", "trainer.steps=4",
                           f"hydra.run.dir={root / 'diverged'}"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2 and "non-finite" in proc.stderr
    error = json.loads((root / "diverged" / "error.json").read_text())
    assert error["diverged"] is True and (error["task"], error["method"], error["shots"]) == ("promise_nfr", "full", 8)

    capsys.readouterr()
    report.report(root, tmp_path / "out")
    printed = capsys.readouterr().out
    md = (tmp_path / "out" / "figure3.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| promise_nfr")]
    assert any("| zero-shot |" in r for r in rows), rows  # k = 0: a row, not dropped
    # the diverged run counts as what its user would get: the train-pool majority of its (task, seed) cell
    assert any("| tiny_bert | full | 50.0 (n=1) (1 of 1 diverged: scored as the majority)" in r for r in rows), rows
    assert "From 2 results.json and 1 diverged run(s) without one" in md
    assert "from 2 domain-task results.json" in printed
    assert "financial* domain has no data set" not in md and "None of the shipped domain data sets is financial" in md


def test_the_domain_sentence_names_the_users_tasks_instead_of_denying_a_financial_one():
    from gradft.report.figure3 import domain_sentence

    text = domain_sentence(["scicite", "fin_news"])
    assert "user tasks here: fin_news" in text and "has no data set here" not in text

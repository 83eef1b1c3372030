"""Your own data, as a new user tries it (issue 31, item 6): a 3-class sentiment file of ``sentence@label`` lines with
no header, labels with stray spaces, a field over the csv module's 128 KiB; ``python -m gradft.data`` refusing exactly
what a run refuses (the same message); cross-task guidance that never maps labels by position. Real files, real
tasks, the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, make_cfg

from gradft.data import DataError, load_task
from gradft.run import run

TINY = ["model=tiny_bert", "trainer.steps=1", "eval.max_examples=8", "metrics.every=0", "logger.mode=disabled"]
TASK = """\
name: senti
root: {root}
fields: [sentence]
label_field: label
train: {{path: sentiment.txt, kind: csv, delimiter: "@", columns: [sentence, label]}}
split: {{seed: 0, select: 12, eval: 30}}
metrics: [accuracy, f1_macro]
"""


def write_senti(root: Path) -> Path:
    """150 ``sentence@label`` lines, 3 classes, no header; conf/task/senti.yaml reads them."""
    labels = ["negative", "neutral", "positive"]
    lines = [f"review number {i} is {labels[i % 3][:3]}ish@{labels[i % 3]}"
             for i in range(150)]
    (root / "sentiment.txt").write_text("\n".join(lines) + "\n")
    (root / "conf" / "task").mkdir(parents=True, exist_ok=True)
    (root / "conf" / "task" / "senti.yaml").write_text(TASK.format(root=root))
    return root / "conf"


def senti_cfg(root: Path, **changes):
    import yaml

    task = yaml.safe_load((root / "conf" / "task" / "senti.yaml").read_text())
    task.update(changes)
    cfg = make_cfg(*TINY, "task=cb")
    cfg.task = task
    return cfg


def test_a_headerless_file_with_its_own_delimiter_is_read_with_named_columns(tmp_path):
    write_senti(tmp_path)
    task = load_task(senti_cfg(tmp_path).task, make_cfg().data)
    assert task.labels == ["negative", "neutral", "positive"]
    assert len(task.train_pool) + len(task.select) + len(task.eval) == 150  # line 1 is a record, not a header
    assert task.train_pool[0].texts[0].startswith("review number")


def test_labels_that_differ_only_in_surrounding_spaces_are_one_class_and_the_warning_names_file_and_spellings(
        tmp_path):
    write_senti(tmp_path)
    rows = [f"review {i},{['neg', 'pos'][i % 2]}" + (" " if i % 10 == 0 else "") for i in range(60)]
    (tmp_path / "spaced.csv").write_text("sentence,label\n" + "\n".join(rows) + "\n")  # 'neg ' on line 2
    task = load_task(senti_cfg(tmp_path, train={"path": "spaced.csv"}).task, make_cfg().data)
    assert task.labels == ["neg", "pos"]  # not four classes
    warning = next(w for w in task.info["warnings"] if "'neg '" in w)
    assert f"{tmp_path / 'spaced.csv'} line 2" in warning and "read as 'neg'" in warning


def test_an_unknown_key_of_a_file_split_is_refused_not_ignored(tmp_path):
    write_senti(tmp_path)
    cfg = senti_cfg(tmp_path, train={"path": "sentiment.txt", "kind": "csv", "sep": "@"})
    with pytest.raises(DataError, match=r"unknown keys \['sep'\] in `train`"):
        load_task(cfg.task, make_cfg().data)


def test_a_csv_field_longer_than_128_kib_is_read(tmp_path):
    long = "word " * 40_000  # 200 KB
    rows = [f'"{long}{i}",{"ab"[i % 2]}' for i in range(40)]
    (tmp_path / "long.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    write_senti(tmp_path)
    cfg = senti_cfg(tmp_path, train={"path": "long.csv"}, fields=["text"], split={"select": 4, "eval": 8})
    task = load_task(cfg.task, make_cfg().data)
    assert len(task.train_pool) == 28 and len(task.train_pool[0].texts[0]) > 200_000


def inspect(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "gradft.data", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("overrides", [
    ["task=cb", "shots=48", "data.balance=strict"],  # neutral has 14 in the pool, its quota is 16
    ["task=cb", "shots=300"],  # more shots than the pool
    ["task=rte", "seed=-1"],  # a config value
    ["task=scicite", "method=ours", "guidance.lambda3=0.1", "guidance.source_task=cb"],  # 3 labels each, other names
])
def test_the_inspect_command_refuses_what_the_run_refuses_with_the_same_message(overrides):
    with pytest.raises((ValueError, DataError)) as e:
        run(make_cfg(*TINY, *overrides))
    proc = inspect(*overrides)
    assert proc.returncode == 2, proc.stdout[-1500:]
    assert proc.stderr.strip() == f"gradft.data: error: {e.value}"


def test_the_inspect_command_names_the_balance_the_run_uses():
    proc = inspect("task=cb", "shots=48", "data.balance=none")
    assert proc.returncode == 0, proc.stderr
    assert "balance=auto" not in proc.stdout


def test_cross_task_guidance_never_maps_labels_by_position():
    """CB and SciCite have three classes each: entailment is not background. Refused without a map, by name with."""
    from gradft.data.checks import source_label_index

    data = make_cfg().data
    cb, scicite = (load_task(make_cfg(f"task={t}").task, data) for t in ("cb", "scicite"))
    with pytest.raises(ValueError, match=r"\['entailment', 'contradiction', 'neutral'\] have no label of the same "
                                         r"name.*never matched by position"):
        source_label_index(cb, scicite, "cb", None)
    index = source_label_index(cb, scicite, "cb", {"entailment": "result", "contradiction": "method",
                                                   "neutral": "background"})
    assert index == {0: 2, 1: 1, 2: 0}
    assert source_label_index(cb, cb, "cb", None) == {0: 0, 1: 1, 2: 2}  # same names: no map needed
    with pytest.raises(ValueError, match="maps 'neutral' to 'other', not a label of scicite"):
        source_label_index(cb, scicite, "cb", {"entailment": "result", "contradiction": "method", "neutral": "other"})

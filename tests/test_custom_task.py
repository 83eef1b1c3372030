"""A user's own data set, as the docs tell a new user to add it: one raw CSV and one task yaml in a config dir outside
the repo. Inspected with ``python -m gradft.data``, then every method with both heads (a grid), a sweep, and
cross-task guidance with the user's task as target and as source, all through the public entry points and real tiny
models; the provenance (sha256, sizes, split seed) and the three baselines land in results.json."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import spawn

from gradft.experiments import grid, sweep
from gradft.experiments.launch import compose_run

WORDS = {"negative": ["awful", "bad", "dull", "poor"], "neutral": ["fine", "okay", "plain", "average"],
         "positive": ["great", "good", "superb", "lovely"]}
TASK_YAML = """\
# my_conf/task/reviews.yaml: the only file the user writes
name: reviews
format: pair
root: {root}
fields: [sentence]
label_field: sentiment
labels: [negative, neutral, positive]
train: {{path: raw.csv}}
dedup: true
split: {{seed: 0, select: 12, eval: 24, stratify: true}}
metrics: [accuracy, f1_macro]
prompt:
  template: "Review: {{sentence}}\\nSentiment:"
  verbalizer: [" bad", " okay", " good"]
"""
TINY = ["trainer.steps=1", "eval.max_examples=8", "metrics.every=1", "logger.mode=disabled", "trainer.threads=1"]


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> dict[str, Path]:
    """raw.csv (90 rows, 3 classes, 6 exact duplicates) and my_conf/task/reviews.yaml, outside the repo."""
    base = tmp_path_factory.mktemp("user")
    (base / "data").mkdir()
    rows = [(f"The film was {w} and the {n}th scene {w} too.", lab)
            for lab, ws in WORDS.items() for n in range(7) for w in ws][:84]
    rows += rows[:6]  # exact duplicates: dedup must drop them
    with open(base / "data" / "raw.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "sentence", "sentiment"])
        w.writerows([(i, s, lab) for i, (s, lab) in enumerate(rows)])
    (base / "my_conf" / "task").mkdir(parents=True)
    (base / "my_conf" / "task" / "reviews.yaml").write_text(TASK_YAML.format(root=base / "data"))
    return {"base": base, "conf": base / "my_conf", "csv": base / "data" / "raw.csv"}


def _results(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("results.json"))]


def test_inspect_prints_sizes_label_counts_both_heads_baselines_and_warnings(user):
    p = spawn("gradft.data", "--config-dir", str(user["conf"]), "task=reviews", "shots=48", stdout=subprocess.PIPE)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "removed: duplicates 6" in out
    assert "train_pool      48" in out and "select          12" in out and "eval            24" in out
    assert "head=classifier" in out and "text_a: The film was" in out
    assert "head=lm" in out and "| Review: The film was" in out and "Sentiment:" in out
    assert "train-pool majority" in out and "chance (1/3): 33.3%" in out and "eval majority" in out
    assert "fewer than shots" not in out
    # too many shots for the pool: the same composition and description as the command, in this process
    from gradft.data import load_task
    from gradft.data.inspect import describe

    cfg = compose_run([f"hydra.searchpath=[file://{user['conf']}]", "task=reviews", "shots=60", "paths.output_dir=."])
    out = describe(cfg.task, load_task(cfg.task, cfg.data), int(cfg.shots), cfg.eval.get("max_examples"))
    assert "fewer than shots=60 // 3 = 20" in out and "the run will fail" in out


def test_every_method_both_heads_as_a_grid_from_the_users_config_dir(user, tmp_path):
    spec = tmp_path / "reviews_grid.yaml"
    spec.write_text(yaml.safe_dump({"grid": {
        "name": "reviews", "axes": {"task": ["reviews"], "method": ["full", "adapter", "lora", "prompt", "ours"],
                                    "shots": [6], "seed": [0], "head": ["classifier", "lm"]},
        # gradient metrics off: what is pinned here is the user's data through every method and head (metrics with
        # the user's task: the cross-task test below; every method and head with metrics: test_run.py)
        "data_seed": "seed", "overrides": ["model=tiny_llama", *TINY, "eval.max_examples=null", "metrics.every=0"]}}))
    searchpath = f"hydra.searchpath=[file://{user['conf']}]"
    assert grid.main([str(spec), "--out", str(tmp_path / "grid"), searchpath]) == 0
    res = _results(tmp_path / "grid")
    assert sorted((r["method"], r["head"]) for r in res) == sorted(
        (m, h) for m in ("full", "adapter", "lora", "prompt", "ours") for h in ("classifier", "lm"))
    sha = hashlib.sha256(user["csv"].read_bytes()).hexdigest()
    for r in res:
        assert r["task"] == "reviews" and 0 <= r["metrics"]["accuracy"] <= 1
        d = r["data"]
        assert d["files"] == [{"role": "train", "path": str(user["csv"]), "sha256": sha, "records": 90}]
        assert d["sizes"] == {"train_pool": 48, "select": 12, "eval": 24}
        assert d["split"]["seed"] == 0 and d["removed"]["duplicates"] == 6
        m = r["metrics"]  # balanced classes: 16 / 4 / 8 per split -> every floor is exactly 1/3
        assert m["baseline_chance"] == pytest.approx(1 / 3)
        assert r["eval_examples"] == 24
        assert m["baseline_train_majority"] == m["baseline_eval_majority"] == pytest.approx(1 / 3)
        assert m["baseline_train_majority_f1_macro"] == pytest.approx(1 / 6)  # F1 1/2 on one class of three
        assert "majority_baseline" not in m


def test_sweep_over_the_users_task(user, tmp_path):
    spec = yaml.safe_load((Path(__file__).resolve().parent.parent / "sweeps" / "smoke.yaml").read_text())
    spec.update(study_name="reviews", storage=f"sqlite:///{tmp_path}/study.db", out_dir=str(tmp_path / "out"),
                tasks=["reviews"], n_trials=2, base=[*spec["base"], "shots=6"])
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    searchpath = f"hydra.searchpath=[file://{user['conf']}]"
    assert sweep.main([str(path), "--conf-dir", str(tmp_path / "conf"), searchpath]) == 0
    done = [t for t in optuna.load_study(study_name="reviews", storage=spec["storage"]).get_trials()
            if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2 and all(0 <= t.value <= 1 for t in done)


@pytest.mark.slow  # a CLI multirun: ~12 s of imports in its own process, then 4 runs
def test_cross_task_guidance_with_the_users_task_as_target_and_as_source(user, tmp_path):
    """Through the CLI with --config-dir, one multirun: the source task is found on the same search path as the
    target (reviews guided by cb through an explicit label map, and by itself: same names, no map needed)."""
    p = spawn("gradft", "--config-dir", str(user["conf"]), "-m", "task=reviews", "guidance.source_task=cb,reviews",
              "method=ours", "model=tiny_bert", "shots=6", "guidance.lambda3=0.1", *TINY,
              "guidance.source_label_map={entailment:positive,contradiction:negative}",
              f"hydra.sweep.dir={tmp_path / 'multi'}")
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    runs = {}
    for path in (tmp_path / "multi").glob("*/results.json"):
        source = yaml.safe_load((path.parent / "config.yaml").read_text())["guidance"]["source_task"]
        runs[(json.loads(path.read_text())["task"], source)] = json.loads(path.read_text())
    assert set(runs) == {("reviews", s) for s in ("cb", "reviews")}
    for r in runs.values():
        cos = [v for _, v in r["trace"]["guide/cos_source"]]
        assert cos and all(-1 <= c <= 1 for c in cos)

"""Tuning that can select (gradft/sweep_signal.py; sweeps/signal_<setting>_<method>.yaml): a real Optuna SQLite study
of tiny runs stores the objective's standard error, per-task and per-seed means, and runs its λ = 0 control point
first (outside the log-scale space); the signal specs give every method one budget and protocol, on the tasks the
testbed rule picks from the committed Figure 3 baseline cells."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import optuna
import pytest
import yaml

from gradft.config.schema import validate
from gradft.experiments import sweep
from gradft.experiments.launch import compose_run
from gradft.experiments.sweep_spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
FAST = ["trainer.steps=1"]
CONTROL = {"guidance.lambda1": 0.0, "guidance.lambda2": 0.0}


def _spec(tmp_path: Path) -> Path:
    spec = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())  # method=ours on a tiny BERT, λ1, λ2 log
    spec.update(storage=f"sqlite:///{tmp_path}/study.db", out_dir=str(tmp_path / "out"), n_seeds=2,
                controls=[CONTROL])
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _trials(spec_path: Path) -> list[optuna.trial.FrozenTrial]:
    spec = load_spec(spec_path)
    return optuna.load_study(study_name=spec.study_name, storage=spec.storage).get_trials()


def test_a_guided_study_runs_its_lambda_zero_control_and_stores_the_objectives_se(tmp_path):
    spec = _spec(tmp_path)
    conf = tmp_path / "conf"
    assert sweep.main([str(spec), "--conf-dir", str(conf), "--n-trials", "1", *FAST]) == 0
    (control,) = _trials(spec)
    assert control.user_attrs["control"] == CONTROL and control.params == {}  # λ = 0: not a log-scale parameter
    assert "guidance.lambda1=0.0" in control.user_attrs["overrides"]
    run_cfg = yaml.safe_load((tmp_path / "out" / "smoke" / "trial_0" / "cb" / "s1" / "config.yaml").read_text())
    assert (run_cfg["guidance"]["lambda1"], run_cfg["guidance"]["lambda2"]) == (0.0, 0.0)
    best = yaml.safe_load((conf / "experiment" / "best_smoke.yaml").read_text())  # the control won: as it ran
    assert (best["guidance"]["lambda1"], best["guidance"]["lambda2"]) == (0.0, 0.0)

    assert sweep.main([str(spec), "--conf-dir", str(conf), "--n-trials", "3", *FAST]) == 0
    ts = _trials(spec)
    assert [("control" in t.user_attrs) for t in ts] == [True, False, False]  # once, first
    for t in ts:
        runs = t.user_attrs["select_accuracy_runs"]
        assert set(runs) == {"cb/s0", "cb/s1", "rte/s0", "rte/s1"}
        values = list(runs.values())
        assert t.user_attrs["select_accuracy_se"] == pytest.approx(statistics.stdev(values) / math.sqrt(4))
        assert t.user_attrs["select_accuracy_n"] == 4
        assert t.user_attrs["select_accuracy_tasks"] == pytest.approx(
            {"cb": (runs["cb/s0"] + runs["cb/s1"]) / 2, "rte": (runs["rte/s0"] + runs["rte/s1"]) / 2})
        assert t.user_attrs["select_accuracy_seeds"] == pytest.approx(
            {"s0": (runs["cb/s0"] + runs["rte/s0"]) / 2, "s1": (runs["cb/s1"] + runs["rte/s1"]) / 2})
    assert all(set(t.params) == {"guidance.lambda1", "guidance.lambda2"} for t in ts[1:])


SETTINGS = {"minilm": ("results/minilm/figure3_minilm", ["full", "lora"]),
            "smollm2": ("results/smollm2/figure3_smollm2", ["full", "lora"])}
METHODS = ["full", "lora", "adapter", "prompt", "ours", "ours_update"]


def _testbed(setting: str, margin: float = 0.10) -> list[str]:
    """The rule: tasks where the best baseline's mean accuracy over its committed Figure 3 cells is at least the
    train-pool majority + margin (ours is never read)."""
    root, baselines = SETTINGS[setting]
    picked = []
    for task_dir in sorted((ROOT / root).iterdir()):
        best, majority = -1.0, None
        for method in baselines:
            rs = [json.loads(p.read_text()) for p in (task_dir / method).glob("k32/s*/results.json")]
            if rs:
                best = max(best, statistics.fmean(r["metrics"]["accuracy"] for r in rs))
                majority = rs[0]["metrics"]["baseline_train_majority"]
        if majority is not None and best >= majority + margin:
            picked.append(task_dir.name)
    return picked


@pytest.mark.parametrize("setting", ["minilm", "smollm2"])
def test_signal_specs_give_every_method_one_budget_and_protocol_on_the_rules_tasks(setting):
    specs = {m: load_spec(ROOT / "sweeps" / f"signal_{setting}_{m}.yaml") for m in METHODS}
    # the common budget: n_trials less the trials a widened range added (the edge rule; prompt's lr at minilm)
    assert len({(s.n_trials - s.widened, s.n_seeds, tuple(s.tasks), s.prune_on, s.out_dir)
                for s in specs.values()}) == 1
    assert sorted(specs["lora"].tasks) == _testbed(setting) and specs["lora"].n_seeds == 3
    for m, s in specs.items():
        assert s.base[0] == f"method={m}"
        assert {"data.select=pool", "trainer.stop=early"} <= set(s.base)
        assert bool(s.controls) == m.startswith("ours")
        for point in [*s.enqueue, *s.controls]:  # the default and the λ = 0 control compose into valid runs
            cfg = compose_run([*s.base, *(f"{k}={v}" for k, v in point.items()), f"task={s.tasks[0]}",
                               "paths.output_dir=/tmp/gradft-spec"])
            validate(cfg)
            if point in s.controls:
                assert (cfg.guidance.lambda1, cfg.guidance.lambda2) == (0.0, 0.0)
                assert cfg.method.lr == s.enqueue[0]["method.lr"]  # at the default learning rate

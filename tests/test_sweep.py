"""Optuna sweeps on a real SQLite storage with real tiny runs: the total budget across invocations, resuming without
repeating a point, the objective (selection split only), failed, pruned and over-budget trials, two workers on one
storage, a SIGKILLed worker, and the best-params experiment file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import spawn
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from optuna.trial import TrialState

from gradft import CONF_DIR
from gradft.experiments import sweep
from gradft.experiments.launch import compose_run
from gradft.experiments.sweep_spec import load_spec, make_sampler

ROOT = Path(__file__).resolve().parent.parent
FAST = ["trainer.steps=1"]


def make_spec(tmp_path: Path, **changes) -> Path:
    """sweeps/smoke.yaml with its storage and outputs in tmp_path (and any key changed)."""
    spec = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())
    spec.update(storage=f"sqlite:///{tmp_path}/study.db", out_dir=str(tmp_path / "out"), **changes)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def trials(spec_path: Path) -> list[optuna.trial.FrozenTrial]:
    spec = load_spec(spec_path)
    return optuna.load_study(study_name=spec.study_name, storage=spec.storage).get_trials()


def run_sweep(spec_path: Path, *args: str) -> int:
    return sweep.main([str(spec_path), "--conf-dir", str(spec_path.parent / "conf"), *args])


def points(ts) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in ts]


def cli(*args: str) -> subprocess.Popen:
    return spawn("gradft.experiments.sweep", *args, stdout=subprocess.PIPE)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory) -> Path:
    """2 trials, then the same study resumed with a total budget of 3."""
    tmp = tmp_path_factory.mktemp("sweep")
    spec = make_spec(tmp)
    assert run_sweep(spec, "--n-trials", "2", *FAST) == 0
    assert [t.state for t in trials(spec)] == [TrialState.COMPLETE] * 2
    assert run_sweep(spec, "--n-trials", "3", *FAST) == 0
    return spec


def test_budget_is_the_total_over_invocations(resumed):
    assert [t.state for t in trials(resumed)] == [TrialState.COMPLETE] * 3
    assert run_sweep(resumed, "--n-trials", "3", *FAST) == 0  # budget met: nothing more runs
    assert len(trials(resumed)) == 3


def test_resuming_a_seeded_sampler_never_repeats_a_point(resumed):
    ps = points(trials(resumed))
    assert len(set(ps)) == 3, ps


def test_objective_is_the_mean_selection_split_accuracy_with_its_std(resumed):
    out = resumed.parent / "out" / "smoke"
    for t in trials(resumed):
        runs = [json.loads((out / f"trial_{t.number}" / task / "s0" / "results.json").read_text())
                for task in ("cb", "rte")]
        sel = [r["select_metrics"]["accuracy"] for r in runs]
        assert t.value == pytest.approx(sum(sel) / 2)
        assert t.user_attrs["select_accuracy_std"] == pytest.approx(abs(sel[0] - sel[1]) / 2 ** 0.5)
        assert t.user_attrs["select_accuracy_runs"] == {"cb/s0": sel[0], "rte/s0": sel[1]}


def test_each_trial_stores_the_overrides_its_runs_were_composed_from(resumed):
    for t in trials(resumed):
        ov = t.user_attrs["overrides"]
        assert "eval.splits=[select]" in ov and "logger.group=smoke" in ov and "trainer.steps=1" in ov
        cfg = yaml.safe_load((resumed.parent / "out" / "smoke" / f"trial_{t.number}" / "cb" / "s0" /
                              "config.yaml").read_text())
        assert cfg["guidance"]["lambda1"] == pytest.approx(t.params["guidance.lambda1"])
        assert f"guidance.lambda1={t.params['guidance.lambda1']!r}" in ov


def test_best_params_file_composes_as_an_experiment(resumed):
    best = max((t for t in trials(resumed)), key=lambda t: t.value)
    conf = resumed.parent / "conf"
    text = (conf / "experiment" / "best_smoke.yaml").read_text()
    assert text.startswith("# @package _global_")
    # composed under a name of its own: a best_smoke.yaml in the repo's conf/experiment (a sweep of smoke.yaml run
    # without --conf-dir) would win over the search path's
    name = f"best_smoke_{conf.parent.name}"
    (conf / "experiment" / f"{name}.yaml").write_text(text)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra.searchpath=[file://{conf}]", sweep.experiment_override(name),
                                           "paths.output_dir=/tmp/x"])
    assert cfg.guidance.lambda1 == pytest.approx(best.params["guidance.lambda1"])
    assert cfg.guidance.lambda2 == pytest.approx(best.params["guidance.lambda2"])
    assert (cfg.method.name, cfg.guidance.name, cfg.model.name, cfg.trainer.steps) == ("ours", "structured",
                                                                                       "tiny_bert", 1)


def test_a_failing_trial_is_marked_fail_and_the_budget_still_completes(tmp_path):
    spec = make_spec(tmp_path, tasks=["cb"], enqueue=[{"method.lr": -1.0}],
                     space={"method.lr": {"type": "float", "low": 1e-4, "high": 1e-3}})  # -1: out of range, used
    assert run_sweep(spec, "--n-trials", "2", *FAST) == 0
    ts = trials(spec)
    assert [t.state for t in ts] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert ts[0].params["method.lr"] == -1.0


def test_a_sweep_whose_trials_all_fail_stops_at_max_failures(tmp_path):
    base = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())["base"]  # no data there: every run fails
    spec = make_spec(tmp_path, tasks=["cb"], max_failures=2, base=[*base, f"data.superglue_root={tmp_path}/none"])
    assert run_sweep(spec, "--n-trials", "3", *FAST) == 1
    assert [t.state for t in trials(spec)] == [TrialState.FAIL] * 2
    assert not (tmp_path / "conf" / "experiment" / "best_smoke.yaml").exists()


def test_pruner_marks_trials_pruned_from_intermediate_selection_accuracy(tmp_path):
    spec = make_spec(tmp_path, tasks=["cb"], pruner={"name": "threshold", "lower": 1.01},
                     base=[*yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())["base"],
                           "eval.select_every=1"])
    assert run_sweep(spec, "--n-trials", "2", "trainer.steps=2") == 0
    ts = trials(spec)
    assert [t.state for t in ts] == [TrialState.PRUNED] * 2
    assert all(list(t.intermediate_values) == [1] for t in ts)
    assert not (tmp_path / "out" / "smoke" / "trial_0" / "cb" / "s0" / "results.json").exists()


def test_run_level_pruning_reports_the_running_mean_after_each_run(tmp_path):
    spec = make_spec(tmp_path, tasks=["cb", "rte"], prune_on="runs", pruner={"name": "threshold", "lower": 1.01},
                     space={"method.lr": {"type": "float", "low": 1e-4, "high": 1e-3}})
    assert run_sweep(spec, "--n-trials", "1", *FAST) == 0
    (t,) = trials(spec)
    assert t.state == TrialState.PRUNED and list(t.intermediate_values) == [1]  # pruned after the first run
    cb = json.loads((tmp_path / "out" / "smoke" / "trial_0" / "cb" / "s0" / "results.json").read_text())
    assert t.intermediate_values[1] == pytest.approx(cb["select_metrics"]["accuracy"])
    assert not (tmp_path / "out" / "smoke" / "trial_0" / "rte").exists()


def test_a_failed_reference_point_is_enqueued_again_on_restart(tmp_path):
    point = {"guidance.lambda1": 0.5, "guidance.lambda2": 0.5}
    spec = make_spec(tmp_path, enqueue=[point], max_failures=5, tasks=["cb"])
    s = load_spec(spec)
    study = optuna.create_study(study_name=s.study_name, storage=s.storage, direction="maximize")
    study.enqueue_trial(point)
    study.tell(study.ask(), state=TrialState.FAIL)  # what a killed worker's enqueued trial becomes
    assert run_sweep(spec, "--n-trials", "1", *FAST) == 0
    ts = trials(spec)
    assert [t.state for t in ts] == [TrialState.FAIL, TrialState.COMPLETE]
    assert ts[1].params == point
    assert run_sweep(spec, "--n-trials", "2", *FAST) == 0  # done once: not enqueued a third time
    ts = trials(spec)
    assert len(ts) == 3 and ts[2].params != point


def test_a_pruner_without_intermediate_values_is_refused(tmp_path):
    with pytest.raises(ValueError, match="eval.select_every"):
        load_spec(make_spec(tmp_path, pruner={"name": "median"}))


def test_shipped_sweeps_are_valid_specs_whose_trials_compose():
    for name in ("ours_rte", "ablation", "smoke"):
        text = (ROOT / "sweeps" / f"{name}.yaml").read_text()
        assert text.startswith("# python -m gradft.experiments.sweep sweeps/")
        spec = load_spec(ROOT / "sweeps" / f"{name}.yaml")
        assert spec.storage == f"sqlite:///outputs/sweeps/{name}.db"
        point = {k: d["choices"][-1] if d["type"] == "categorical" else d["high"] for k, d in spec.space.items()}
        cfg = compose_run([*spec.base, *(f"{k}={v}" for k, v in point.items()), f"task={spec.tasks[0]}",
                           "paths.output_dir=/tmp/x"])
        for k, v in point.items():
            assert OmegaConf.select(cfg, k if "." in k else f"{k}.name") == v
    # the tune_<setting>_<method> studies: tests/test_tuning_specs.py
    spec = load_spec(ROOT / "sweeps" / "ablation.yaml")
    assert isinstance(make_sampler(spec, 0), optuna.samplers.GridSampler)
    assert len(spec.space["method"]["choices"]) * len(spec.space["guidance"]["choices"]) == 8 == spec.n_trials


@pytest.mark.slow
def test_two_workers_on_one_storage_finish_the_budget_without_lost_or_repeated_trials(tmp_path):
    spec = make_spec(tmp_path)
    p = cli(str(spec), "--workers", "2", "--n-trials", "4", "--conf-dir", str(tmp_path / "conf"), *FAST)
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    ts = trials(spec)
    assert [t.state for t in ts] == [TrialState.COMPLETE] * 4
    assert len(set(points(ts))) == 4
    assert all(t.user_attrs["worker"].endswith(("w0", "w1")) for t in ts)


@pytest.mark.slow
def test_sigkilled_worker_keeps_finished_trials_and_its_running_trial_fails_on_restart(tmp_path):
    spec = make_spec(tmp_path)
    s = load_spec(spec)
    optuna.create_study(study_name=s.study_name, storage=s.storage, direction="maximize")  # once, before workers
    slow = ["trainer.steps=30"]  # a trial (cb + rte) lasts ~5 s: long enough to be killed in; the restart is FAST
    p = cli(str(spec), "--n-trials", "3", "--conf-dir", str(tmp_path / "conf"), *slow)
    deadline = time.time() + 300
    ts = []
    while time.time() < deadline:
        time.sleep(0.3)
        ts = trials(spec)
        if any(t.state == TrialState.COMPLETE for t in ts) and any(t.state == TrialState.RUNNING for t in ts):
            break
    time.sleep(1.0)
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = {t.number: (t.state, t.value) for t in trials(spec)}
    killed = [n for n, (s, _) in before.items() if s == TrialState.RUNNING]
    assert len(killed) == 1, before

    assert run_sweep(spec, "--n-trials", "3", *FAST) == 0
    after = trials(spec)
    for n, (state, value) in before.items():
        if state == TrialState.COMPLETE:
            assert (after[n].state, after[n].value) == (state, value)
    assert after[killed[0]].state == TrialState.FAIL  # its heartbeat stopped: failed on restart
    assert sum(t.state == TrialState.COMPLETE for t in after) == 3
    assert not any(t.state == TrialState.RUNNING for t in after)
    assert len(set(points(after))) == len(after)


@pytest.mark.parametrize("url,needle", [("postgresql://u:p@127.0.0.1:9/db", "Connection refused"),
                                        ("sqlite:////proc/no/such/dir/x.db", "cannot be opened")])
def test_a_storage_url_that_cannot_be_opened_fails_with_a_clear_message(url, needle, tmp_path, capsys):
    """main's exit code and its one line on stderr (the command exits with what main
    returns)."""
    assert sweep.main([str(ROOT / "sweeps" / "smoke.yaml"), "--storage", url, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"storage={url.replace(':p@', ':***@')!r}" in err and needle in err, err[-1500:]  # no password


def test_a_sweep_that_met_its_budget_exits_0_at_once_without_starting_workers(resumed):
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "gradft.experiments.sweep", str(resumed),
                           "--workers", "2",
                           "--n-trials", "3", "--conf-dir", str(resumed.parent / "conf")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - t0
    err = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    assert proc.returncode == 0 and "budget met: 3 trials COMPLETE or PRUNED of n_trials=3" in err, err[-2000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported and seconds < 20, seconds  # was ~61 s: two workers importing torch to do nothing
    assert len(trials(resumed)) == 3


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.slow
def test_sigterm_to_a_two_worker_sweep_stops_its_workers_and_fails_their_trials(tmp_path):
    spec = make_spec(tmp_path)
    s = load_spec(spec)
    optuna.create_study(study_name=s.study_name, storage=s.storage, direction="maximize")  # before polling it
    p = cli(str(spec), "--workers", "2", "--n-trials", "4", "--conf-dir", str(tmp_path / "conf"), "trainer.steps=5000")
    pids: list[int] = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline and p.poll() is None:
            time.sleep(0.5)
            running = [t for t in trials(spec) if t.state == TrialState.RUNNING]
            if len(running) == 2 and all("worker" in t.user_attrs for t in running):
                pids = [int(t.user_attrs["worker"].split(":")[1]) for t in running]
                break
        assert len(pids) == 2, "two trials never ran at once"
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=180)
        assert p.returncode == 143, err[-3000:]
        time.sleep(1.0)
        assert not any(_alive(pid) for pid in pids), "a worker outlived the sweep it belonged to"
        assert [t.state for t in trials(spec)] == [TrialState.FAIL] * 2  # recorded at once, not left RUNNING
    finally:
        for pid in pids:  # the workers this test started, if the code under test orphaned them
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if p.poll() is None:
            p.kill()

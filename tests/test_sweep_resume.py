"""A stopped sweep loses no finished run (gradft/experiments/resume.py): a trial stopped by SIGTERM is run again with
its own parameters by the next invocation, which copies the runs it had finished instead of training them again;
a trial whose objective raised is a broken point and is not retried. Real SQLite studies, real tiny runs."""

from __future__ import annotations

import json
import signal
import time

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from test_sweep import cli, load_spec, make_spec, run_sweep, trials

from gradft.config.guidance import GUIDANCE_VERSION
from gradft.experiments.resume import retry_interrupted

SLOW = ["trainer.steps=40"]  # a tiny run of ~2-4 s: the SIGTERM lands while the trial's second run trains


@pytest.mark.slow
def test_a_sigtermed_trial_is_run_again_with_its_parameters_and_its_finished_runs_are_reused(tmp_path):
    spec = make_spec(tmp_path, n_trials=1)
    s = load_spec(spec)
    optuna.create_study(study_name=s.study_name, storage=s.storage, direction="maximize")
    first = tmp_path / "out" / "smoke" / "trial_0" / "cb" / "s0" / "results.json"
    p = cli(str(spec), "--conf-dir", str(tmp_path / "conf"), *SLOW)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None and not first.exists():
        time.sleep(0.05)
    if not first.exists():  # it exited (say why) or hung
        p.kill()
        _, err = p.communicate()
        pytest.fail(f"the trial's first run never finished (exit {p.returncode}): {err[-3000:]}")
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=180)
    assert p.returncode == 143, err[-3000:]
    stopped = trials(spec)
    assert [t.state for t in stopped] == [TrialState.FAIL] and "interrupted" in stopped[0].user_attrs
    assert not (tmp_path / "out" / "smoke" / "trial_0" / "rte" / "s0" / "results.json").exists()

    assert run_sweep(spec, *SLOW) == 0  # the same command again
    ts = trials(spec)
    assert [t.state for t in ts] == [TrialState.FAIL, TrialState.COMPLETE]
    assert ts[1].params == ts[0].params and ts[1].user_attrs["retry_of"] == 0
    reused = tmp_path / "out" / "smoke" / "trial_1" / "cb" / "s0" / "results.json"
    assert reused.read_text() == first.read_text()  # copied: a run trained again would differ in wall_time_s
    assert ts[1].user_attrs["select_accuracy_runs"]["cb/s0"] == json.loads(first.read_text())["select_metrics"][
        "accuracy"]  # the SIGTERM may land after results.json, before the trial recorded it: the file is the truth
    assert (tmp_path / "out" / "smoke" / "trial_1" / "rte" / "s0" / "results.json").exists()  # the rest: trained


def test_only_interrupted_or_stale_trials_are_retried_once_each_and_a_control_keeps_its_overrides(tmp_path):
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path}/s.db", direction="maximize")
    dist = {"method.lr": FloatDistribution(1e-4, 1e-2, log=True)}

    def failed(lr: float, **attrs) -> None:
        study.add_trial(optuna.trial.create_trial(params={"method.lr": lr}, distributions=dist,
                                                  state=TrialState.FAIL, user_attrs=attrs))

    failed(1e-3, interrupted="SIGTERM")  # #0: stopped by a signal
    failed(2e-3)  # #1: failed as stale (its worker was killed): no attr
    failed(3e-3, error="RuntimeError: CUDA out of memory")  # #2: its objective raised: a broken point
    failed(4e-3, interrupted="SIGTERM", control={"method.lr": 4e-3, "guidance.lambda1": 0})  # #3: a λ = 0 control
    assert retry_interrupted(study) == [0, 1, 3]
    assert retry_interrupted(study) == []  # each once: the retries are queued
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [(t.system_attrs["fixed_params"]["method.lr"], t.user_attrs["retry_of"]) for t in waiting] == [
        (1e-3, 0), (2e-3, 1), (4e-3, 3)]
    assert waiting[2].user_attrs["control"] == {"method.lr": 4e-3, "guidance.lambda1": 0}


def test_a_finished_study_gets_no_retry_of_its_failed_trials(tmp_path):
    spec = make_spec(tmp_path, n_trials=1, tasks=["cb"])
    s = load_spec(spec)
    study = optuna.create_study(study_name=s.study_name, storage=s.storage, direction="maximize")
    dist = {k: FloatDistribution(1e-3, 1.0, log=True) for k in ("guidance.lambda1", "guidance.lambda2")}
    for state in (TrialState.FAIL, TrialState.COMPLETE):  # a trial stopped long ago, then the budget met
        study.add_trial(optuna.trial.create_trial(params={k: 0.5 for k in dist}, distributions=dist, state=state,
                                                  value=0.5 if state == TrialState.COMPLETE else None,
                                                  user_attrs={"guidance_version": GUIDANCE_VERSION}))
    assert run_sweep(spec) == 0
    assert [t.state for t in trials(spec)] == [TrialState.FAIL, TrialState.COMPLETE]  # nothing enqueued

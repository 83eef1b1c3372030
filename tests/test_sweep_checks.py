"""A sweep spec is checked before its first trial (a typo in a searched name, an empty space: one line, exit 2, no
study), failed trials of an earlier run do not stop a fixed spec, and a storage server that accepts connections but
never answers fails within the connect timeout, without its password in the message (real SQLite studies, a real
socket that never answers)."""

from __future__ import annotations

import socket
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState
from test_sweep import FAST, make_spec, run_sweep, trials

from gradft.experiments import sweep_spec


def test_a_typo_in_a_searched_name_is_refused_before_any_trial_with_a_did_you_mean(tmp_path, capsys):
    spec = make_spec(tmp_path, space={"method.lrr": {"type": "float", "low": 1e-4, "high": 1e-3}})
    assert run_sweep(spec, "--n-trials", "1", *FAST) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "method.lrr: no such config key; did you mean method.lr?" in err[0]
    assert not (tmp_path / "study.db").exists()  # no study, no failed trial left behind


def test_a_bad_value_for_a_searched_name_is_refused_before_any_trial(tmp_path, capsys):
    spec = make_spec(tmp_path, space={"trainer.warmup_ratio": {"type": "float", "low": 2.0, "high": 3.0}})
    assert run_sweep(spec, "--n-trials", "1", *FAST) == 2
    assert "trainer.warmup_ratio=2.0: must be" in capsys.readouterr().err
    assert trials(spec) == []  # the study exists (its budget is checked first), no trial ran


def test_an_empty_search_space_is_refused(tmp_path, capsys):
    spec = make_spec(tmp_path, space={})
    assert run_sweep(spec, "--n-trials", "1", *FAST) == 2
    assert "the search space is empty" in capsys.readouterr().err
    assert not (tmp_path / "study.db").exists()


def test_failed_trials_of_an_earlier_run_do_not_stop_the_fixed_spec(tmp_path, caplog):
    """What a broken spec left: 3 failed trials (here added to the real study as they were). The fixed spec runs
    its budget; the failed trials stay in the study and use none of it."""
    spec = make_spec(tmp_path, tasks=["cb"])
    s = sweep_spec.load_spec(spec)
    study = optuna.create_study(study_name=s.study_name, storage=s.storage, direction="maximize")
    for _ in range(3):
        study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    with caplog.at_level("INFO", logger="gradft.experiments.sweep"):
        assert run_sweep(spec, "--n-trials", "1", *FAST) == 0
    assert [t.state for t in trials(spec)] == [TrialState.FAIL] * 3 + [TrialState.COMPLETE]
    assert "3 failed trial(s) of earlier runs (#0, #1, #2) stay in the study" in caplog.text


@pytest.fixture
def silent_server():
    """A TCP server that accepts every connection and never answers: a PostgreSQL host that hangs."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join()
    for c in held:
        c.close()
    srv.close()


def test_a_storage_that_accepts_but_never_answers_fails_within_the_connect_timeout_without_its_password(
        tmp_path, silent_server, capsys, monkeypatch):
    pytest.importorskip("psycopg", reason="no psycopg driver: pip install -e '.[postgres]'")
    monkeypatch.setattr(sweep_spec, "CONNECT_TIMEOUT_S", 2, raising=False)
    url = f"postgresql+psycopg://gradft:s3cret-Pw@127.0.0.1:{silent_server}/studies"
    t = time.perf_counter()
    assert run_sweep(make_spec(tmp_path, tasks=["cb"]), "--storage", url, "--n-trials", "1", *FAST) == 2
    seconds = time.perf_counter() - t
    err = capsys.readouterr().err
    assert seconds < 30, seconds  # compose check (a few s) + the 2 s timeout; without it: minutes
    assert "gradft:***@127.0.0.1" in err and "no answer within 2 s" in err and "s3cret-Pw" not in err


def test_the_password_is_masked_in_any_storage_url():
    assert sweep_spec.mask("postgresql+psycopg://u:p%40ss@db:5432/x") == "postgresql+psycopg://u:***@db:5432/x"
    assert sweep_spec.mask("sqlite:///outputs/sweeps/a.db") == "sqlite:///outputs/sweeps/a.db"

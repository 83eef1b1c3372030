"""Sweeps on a real PostgreSQL server (how users scale out): a throwaway server started by the fixture (initdb into a
temporary folder, a unix socket only, as the ``postgres`` user when run as root), two worker processes on one study,
and a SIGKILLed worker whose trial is failed by its stopped heartbeat and replaced.

Skipped, saying why, where the server binaries or the ``psycopg`` driver (``pip install -e .[postgres]``) are missing;
``GRADFT_REQUIRE_POSTGRES=1`` (set by ``.ci/run``) turns that skip into a failure.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from test_sweep import FAST, ROOT, cli, points, run_sweep

pytestmark = pytest.mark.slow


def _missing(reason: str) -> None:
    if os.environ.get("GRADFT_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"GRADFT_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


def _binary(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A PostgreSQL server for this module: ``postgresql+psycopg://`` URL on a unix socket, removed afterwards."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _missing("no psycopg driver: pip install -e '.[postgres]'")
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if not (initdb and pg_ctl):
        _missing("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="gradft-pg-"))
    if os.geteuid() == 0:  # postgres refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            _missing("running as root and there is no `postgres` user to run the server as")
        os.chown(root, user.pw_uid, user.pw_gid)
        runuser = shutil.which("runuser") or next((p for p in ("/usr/sbin/runuser", "/sbin/runuser")
                                                    if os.path.exists(p)), None)  # sbin may be off a user's PATH
        if runuser is None:
            _missing("running as root and there is no `runuser` to start the server as `postgres`")
        as_user = [runuser, "-u", "postgres", "--"]
    data, port = root / "data", 55432 + os.getpid() % 1000
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"], check=True,
                   capture_output=True, timeout=120)
    opts = f"-c listen_addresses='' -k {root} -p {port} -c max_connections=100 -c fsync=off"
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "-t", "60",
                    "start"], check=True, capture_output=True, timeout=120)
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={root}&port={port}"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True,
                       timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def pg_spec(tmp_path: Path, url: str, name: str) -> Path:
    spec = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())
    spec.update(storage=url, study_name=name, out_dir=str(tmp_path / "out"))
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def study_trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials()


def test_two_workers_on_one_postgresql_study_finish_the_budget_without_lost_or_repeated_trials(pg_url, tmp_path):
    spec = pg_spec(tmp_path, pg_url, "two_workers")
    p = cli(str(spec), "--workers", "2", "--n-trials", "4", "--conf-dir", str(tmp_path / "conf"), *FAST)
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    ts = study_trials(pg_url, "two_workers")
    assert [t.state for t in ts] == [TrialState.COMPLETE] * 4
    assert len(set(points(ts))) == 4 and sorted(t.number for t in ts) == [0, 1, 2, 3]
    assert {t.user_attrs["worker"][-2:] for t in ts} == {"w0", "w1"}  # both workers took trials


def test_a_sigkilled_worker_on_postgresql_has_its_trial_failed_and_replaced(pg_url, tmp_path, caplog):
    spec = pg_spec(tmp_path, pg_url, "sigkill")
    optuna.create_study(study_name="sigkill", storage=pg_url, direction="maximize")
    slow = ["trainer.steps=30"]  # a trial (cb + rte) lasts ~5 s: long enough to be killed in; the restart is FAST
    p = cli(str(spec), "--n-trials", "3", "--conf-dir", str(tmp_path / "conf"), *slow)
    deadline, ts = time.time() + 300, []
    while time.time() < deadline and p.poll() is None:
        time.sleep(0.3)
        ts = study_trials(pg_url, "sigkill")
        if any(t.state == TrialState.COMPLETE for t in ts) and any(t.state == TrialState.RUNNING for t in ts):
            break
    p.send_signal(signal.SIGKILL)
    p.wait()
    killed = [t.number for t in study_trials(pg_url, "sigkill") if t.state == TrialState.RUNNING]
    assert len(killed) == 1, ts

    caplog.set_level("INFO", logger="gradft.experiments.sweep")
    assert run_sweep(spec, "--n-trials", "3", *FAST) == 0
    after = study_trials(pg_url, "sigkill")
    assert after[killed[0]].state == TrialState.FAIL
    assert sum(t.state == TrialState.COMPLETE for t in after) == 3 and len(set(points(after))) == len(after)
    assert any(f"trial #{killed[0]}" in m and "marked FAIL" in m for m in caplog.messages), caplog.messages

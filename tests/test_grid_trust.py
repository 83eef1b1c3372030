"""Results that cannot be silently wrong (issue 31), on real tiny grids: a finished result is never overwritten
without ``--overwrite`` and then kept; a full disk while writing results.json fails the grid with its reason and
leaves a cell that is not done; a new config.yaml beside an old results.json, a results.json of the wrong shape or
out of range is not done and not reported; an empty config.yaml is one warning; locks held by reused PIDs are broken,
other hosts' only with ``--break-locks``, and a waiting grid says what it waits for."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from gradft import tracking
from gradft.experiments import grid, locks, resultfile
from gradft.report import build as report

CELL = "cb/prompt/k32/s0"
ONE = ["task=cb", "method=prompt"]  # one cell of the smoke grid


def starts(tree: Path) -> Counter:
    log = tree / "smoke" / "runs.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    return Counter(e["cell"] for e in map(json.loads, lines) if e["event"] == "start")


@pytest.fixture
def tree(smoke_grid, tmp_path) -> Path:
    shutil.copytree(smoke_grid, tmp_path / "g")
    return tmp_path / "g"


def test_a_finished_cell_of_another_config_is_refused_without_overwrite_and_kept_with_it(tree, caplog):
    cell = tree / "smoke" / CELL
    old = (cell / "results.json").read_bytes()
    old_key = json.loads(old)["config_key"]
    with caplog.at_level("INFO", logger="gradft.experiments.grid"):
        assert grid.main(["smoke", "--out", str(tree), *ONE, "trainer.steps=3"]) == 2
    assert f"hold results of another config: {CELL}; nothing run. --overwrite" in caplog.text
    assert (cell / "results.json").read_bytes() == old and starts(tree)[CELL] == 1  # untouched, nothing started
    assert grid.main(["smoke", "--out", str(tree), *ONE, "trainer.steps=3", "--overwrite"]) == 0
    assert json.loads((cell / "results.json").read_text())["steps"] == 3
    assert (cell / "superseded" / old_key / "results.json").read_bytes() == old  # the old result, kept
    # the other grid's turn: its cell is now the finished one of another config
    assert grid.main(["smoke", "--out", str(tree), *ONE]) == 2
    assert json.loads((cell / "results.json").read_text())["steps"] == 3
    # the report never reads a superseded result
    assert all("superseded" not in r["_path"] for r in report.collect(tree))


def test_a_full_disk_while_writing_results_fails_the_grid_and_leaves_a_cell_that_is_not_done(tree, monkeypatch,
                                                                                             caplog):
    real = tracking.atomic_write

    def full_disk(path, text):  # what the kernel answers on a full disk: the write call fails with ENOSPC
        if Path(path).name in ("results.json", "error.json"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, text)

    monkeypatch.setattr(tracking, "atomic_write", full_disk)
    monkeypatch.setattr(grid, "atomic_write", full_disk)
    args = ["smoke", "--out", str(tree), *ONE, "trainer.steps=3", "--overwrite"]
    with caplog.at_level("INFO", logger="gradft.experiments.grid"):
        assert grid.main(args) == 1
    assert f"failed: {CELL} (OSError: [Errno 28] No space left on device" in caplog.text
    cell = tree / "smoke" / CELL
    assert not (cell / "results.json").exists()  # never a new config.yaml beside an old results.json
    p = grid.plan("smoke", [*ONE, "trainer.steps=3"], tree)
    assert not p.is_done(p.cells[0])
    monkeypatch.setattr(tracking, "atomic_write", real)
    monkeypatch.setattr(grid, "atomic_write", real)
    assert grid.main(args) == 0 and starts(tree)[CELL] == 3  # the space is back: the cell runs again
    assert p.is_done(p.cells[0])


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB filesystem (tmpfs; needs root and a mount the sandbox allows, else skipped): a full disk."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root, or not allowed): the monkeypatched ENOSPC test covers it")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave_pages: int) -> Path:
    """Fill ``disk`` with 4 KiB files, then free ``leave_pages`` of them: room for a config.yaml, not a result."""
    (disk / "fill").mkdir()
    i = 0
    try:
        while True:
            (disk / "fill" / str(i)).write_bytes(b"\0" * 4096)
            i += 1
    except OSError as e:
        assert e.errno == errno.ENOSPC
    for j in range(leave_pages):
        (disk / "fill" / str(j)).unlink()
    return disk / "fill"


def test_a_real_full_disk_fails_the_grid_and_the_cell_reruns_once_there_is_space(small_disk, caplog):
    out = str(small_disk)
    assert grid.main(["smoke", "--out", out, *ONE]) == 0
    filler = fill(small_disk, leave_pages=2)
    with caplog.at_level("INFO", logger="gradft.experiments.grid"):
        assert grid.main(["smoke", "--out", out, *ONE, "trainer.steps=3", "--overwrite"]) == 1
    assert f"failed: {CELL} (OSError: [Errno 28] No space left on device" in caplog.text
    cell = small_disk / "smoke" / CELL
    assert not (cell / "results.json").exists() and len(list((cell / "superseded").iterdir())) == 1
    p = grid.plan("smoke", [*ONE, "trainer.steps=3"], out)
    assert not p.is_done(p.cells[0])
    shutil.rmtree(filler)
    assert grid.main(["smoke", "--out", out, *ONE, "trainer.steps=3"]) == 0 and p.is_done(p.cells[0])


def test_a_new_config_beside_an_old_results_json_is_not_done(tree):
    """What a kill between config.yaml and results.json (or a full disk) left before: the new config, the old
    results. The results.json carries its own key, which is not the config's."""
    cell = tree / "smoke" / CELL
    cfg = yaml.safe_load((cell / "config.yaml").read_text())
    cfg["trainer"]["steps"] = 3
    (cell / "config.yaml").write_text(yaml.safe_dump(cfg))
    p = grid.plan("smoke", [*ONE, "trainer.steps=3"], tree)
    assert not p.is_done(p.cells[0]) and not p.conflicts()
    assert "mismatched pair" in resultfile.inspect(cell).reason


def test_an_adoption_cut_short_leaves_a_cell_that_is_not_done(tree, monkeypatch):
    """A sibling grid's cell is copied config.yaml first: whatever stood in the cell before is moved aside first,
    so a crash before results.json is written leaves no pair that counts as done."""
    shutil.copytree(tree / "smoke", tree / "sibling")
    bad = tree / "smoke" / CELL / "results.json"
    r = json.loads(bad.read_text())
    r["metrics"]["accuracy"] = 1.7
    bad.write_text(json.dumps(r))
    real = grid.atomic_write

    def crash_before_results(path, text):
        if Path(path).name == "results.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, text)

    monkeypatch.setattr(grid, "atomic_write", crash_before_results)
    p = grid.plan("smoke", ONE, tree)
    assert not p.adopt(p.cells[0])
    assert not p.is_done(p.cells[0]) and not bad.exists()
    assert list((tree / "smoke" / CELL / "superseded").glob("invalid-*/results.json"))  # the bad one, kept


@pytest.mark.parametrize("change", ["accuracy 1.7", "accuracy null", "accuracy '0.5'", "no metrics", "list",
                                    "history list", "seed str"])
def test_a_results_json_of_the_wrong_shape_or_out_of_range_is_not_done_and_not_reported(tree, change, caplog):
    path = tree / "smoke" / CELL / "results.json"
    r = json.loads(path.read_text())
    if change.startswith("accuracy"):
        r["metrics"]["accuracy"] = {"accuracy 1.7": 1.7, "accuracy null": None, "accuracy '0.5'": "0.5"}[change]
    elif change == "no metrics":
        del r["metrics"]
    elif change == "history list":
        r["history"] = []
    elif change == "seed str":
        r["seed"] = "0"
    path.write_text(json.dumps([] if change == "list" else r))
    p = grid.plan("smoke", ONE, tree)
    assert not p.is_done(p.cells[0]) and not p.conflicts()
    with caplog.at_level("WARNING", logger="gradft.report.build"):
        recs = report.collect(tree)  # one warning, no traceback
    assert len(recs) == 3 and f"skipping {path}" in caplog.text


def test_an_empty_config_yaml_anywhere_under_out_is_one_warning_not_a_crash(tree, caplog):
    shutil.copytree(tree / "smoke", tree / "sibling")
    (tree / "sibling" / CELL / "config.yaml").write_text("")  # a sibling's: never adopted
    (tree / "smoke" / CELL / "config.yaml").write_text("")  # this grid's own: rerun, the old files kept
    with caplog.at_level("INFO", logger="gradft.experiments.grid"):
        assert grid.main(["smoke", "--out", str(tree), "method=prompt"]) == 0
    assert f"{tree / 'smoke' / CELL / 'results.json'}: config.yaml is empty or not a mapping; rerunning" in caplog.text
    assert starts(tree)[CELL] == 2 and starts(tree)["rte/prompt/k32/s0"] == 1  # only the empty one reran


def test_the_holm_header_counts_the_tests_it_ran(tmp_path):
    from test_report_table1 import records

    from gradft.report.table1 import table1

    recs = [r for r in records() if not (r["method"] == "prompt" and (r["task"], r["seed"]) != ("cb", 100))]
    t = table1(recs, tmp_path, tmp_path)  # ours − prompt has one pair: no p-value, not in Holm's family
    assert t["tests"][("ours", "prompt")]["n_pairs"] == 1
    assert "Holm: corrected over the 3 comparisons" in t["markdown"]


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "60"])


def test_a_lock_whose_pid_now_names_another_process_is_broken(tmp_path):
    lock = tmp_path / "cell" / ".lock"
    lock.parent.mkdir()
    other = _sleeper()  # alive, with a PID the lock names, but started at another time than the lock's writer
    try:
        info = {"pid": other.pid, "host": locks.HOST, "time": time.time(), "boot_id": locks.BOOT_ID,
                "start": locks.start_time(other.pid)}
        lock.write_text(json.dumps(info))
        assert not locks.acquire(lock)  # its holder: respected
        lock.write_text(json.dumps({**info, "start": info["start"] - 1}))
        assert locks.acquire(lock)  # a reused PID
        lock.write_text(json.dumps({**info, "boot_id": "another-boot"}))
        assert locks.acquire(lock)  # written before a reboot
        lock.write_text(json.dumps({"pid": other.pid, "host": locks.HOST, "time": (locks.BOOT_TIME or 1e9) - 60}))
        assert locks.acquire(lock)  # an older lock (no start time) written before this boot
    finally:
        other.kill()
        other.wait()


def test_another_hosts_lock_is_broken_only_with_break_locks(tree, caplog):
    lock = tree / "smoke" / CELL / ".lock"
    (tree / "smoke" / CELL / "results.json").unlink()
    lock.write_text(json.dumps({"pid": 1, "host": "gone-host", "time": time.time()}))
    assert not locks.acquire(lock) and "gone-host" in locks.describe(lock) and "--break-locks" in locks.describe(lock)
    assert grid.main(["smoke", "--out", str(tree), *ONE, "--break-locks"]) == 0
    assert starts(tree)[CELL] == 2 and not lock.exists()


def test_a_waiting_grid_says_which_cell_and_holder_it_waits_for(tree, caplog):
    (tree / "smoke" / CELL / "results.json").unlink()
    holder = _sleeper()
    lock = tree / "smoke" / CELL / ".lock"
    lock.write_text(json.dumps({"pid": holder.pid, "host": locks.HOST, "time": time.time(),
                                "boot_id": locks.BOOT_ID, "start": locks.start_time(holder.pid)}))
    threading.Timer(4.0, holder.kill).start()  # the holder dies: its lock goes stale and the grid goes on
    try:
        with caplog.at_level("INFO", logger="gradft.experiments.grid"):
            assert grid.main(["smoke", "--out", str(tree), *ONE]) == 0
    finally:
        holder.kill()
        holder.wait()
    assert f"waiting for {CELL}, locked by pid {holder.pid} on host {locks.HOST} since " in caplog.text
    assert starts(tree)[CELL] == 2

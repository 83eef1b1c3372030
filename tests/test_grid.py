"""Grids on real tiny runs: every cell once, finished cells skipped on rerun (and only those), unreadable or
other-config results rerun, failing cells logged with a non-zero exit, infeasible cells skipped and recorded,
per-cell locks (stale ones broken), concurrent grid processes and a SIGKILL mid-grid."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import spawn

from gradft.experiments import grid, locks
from gradft.experiments.launch import compose_run, task_seeds

ROOT = Path(__file__).resolve().parent.parent
CELLS = {"cb/prompt/k32/s0", "cb/ours/k32/s0", "rte/prompt/k32/s0", "rte/ours/k32/s0"}


def events(tree: Path, kind: str = "start") -> Counter:
    log = tree / "smoke" / "runs.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    return Counter(e["cell"] for e in map(json.loads, lines) if e["event"] == kind)


def cli(*args: str) -> subprocess.Popen:
    return spawn("gradft.experiments.grid", *args)


@pytest.fixture
def finished(smoke_grid) -> Path:
    """The smoke grid (2 tasks × 2 methods × 1 seed), run once per test process (conftest); tests work on copies."""
    return smoke_grid


@pytest.fixture
def tree(finished, tmp_path) -> Path:
    shutil.copytree(finished, tmp_path / "g")
    return tmp_path / "g"


def test_smoke_grid_runs_every_cell_exactly_once(finished):
    assert events(finished) == Counter(dict.fromkeys(CELLS, 1))
    assert events(finished, "done") == Counter(dict.fromkeys(CELLS, 1))
    for cell in CELLS:
        r = json.loads((finished / "smoke" / cell / "results.json").read_text())
        assert f"{r['task']}/{r['method']}/k{r['shots']}/s{r['seed']}" == cell
        assert not (finished / "smoke" / cell / ".lock").exists()


def test_rerun_skips_every_finished_cell(tree):
    assert grid.main(["smoke", "--out", str(tree)]) == 0
    assert events(tree) == Counter(dict.fromkeys(CELLS, 1))


def test_deleting_one_results_json_reruns_only_that_cell(tree):
    (tree / "smoke" / "rte/ours/k32/s0" / "results.json").unlink()
    assert grid.main(["smoke", "--out", str(tree)]) == 0
    assert events(tree) == Counter({**dict.fromkeys(CELLS, 1), "rte/ours/k32/s0": 2})


def test_the_eta_rests_on_measured_cell_times_and_progress_is_logged_per_cell(tree, capsys, caplog):
    (tree / "smoke" / "rte/ours/k32/s0" / "results.json").unlink()
    p = grid.plan("smoke", [], tree)
    todo = [c for c in p.cells if not p.is_done(c)]
    same_task = json.loads((tree / "smoke" / "rte/prompt/k32/s0" / "results.json").read_text())["wall_time_s"]
    assert [c.rel for c in todo] == ["rte/ours/k32/s0"]
    assert p.eta(todo, 1) == (pytest.approx(same_task), "measured on 3 finished cells")  # no rte/ours: rte's mean
    assert p.eta(todo, 2)[0] == pytest.approx(same_task / 2)
    assert p.eta(p.cells, 2) == (4 * 3 / 2, "est_seconds_per_cell of the grid file")  # as if nothing had run
    assert grid.main(["smoke", "--out", str(tree), "--dry-run"]) == 0
    assert "1 to run, ETA ~0 min with 1 worker(s), measured on 3 finished cells" in capsys.readouterr().out
    with caplog.at_level("INFO", logger="gradft.experiments.grid"):
        assert grid.main(["smoke", "--out", str(tree)]) == 0
    assert "grid smoke: 4/4 cells done, 0 to run" in caplog.text


def test_the_eta_of_a_grid_begun_on_other_hardware_uses_this_devices_cells_when_it_has_some(tree):
    def as_gpu(rel: str, seconds: float) -> None:  # a cell as a lent GPU would have left it
        path = tree / "smoke" / rel / "results.json"
        r = json.loads(path.read_text())
        path.write_text(json.dumps({**r, "wall_time_s": seconds, "env": {**r["env"], "device": "cuda"}}))

    (tree / "smoke" / "rte/ours/k32/s0" / "results.json").unlink()
    p = grid.plan("smoke", [], tree)
    todo = [c for c in p.cells if not p.is_done(c)]
    cpu_rte = json.loads((tree / "smoke" / "rte/prompt/k32/s0" / "results.json").read_text())["wall_time_s"]
    as_gpu("cb/ours/k32/s0", 1000.0)  # another task: left out, the CPU's own rte cell decides
    assert p.eta(todo, 1) == (pytest.approx(cpu_rte), "measured on 2 finished cells")
    for rel in ("cb/prompt/k32/s0", "rte/prompt/k32/s0"):
        as_gpu(rel, 7.0)
    assert p.eta(todo, 1) == (pytest.approx(7.0), "measured on 3 finished cells on another device than this cpu")


def test_the_eta_measures_a_cell_by_cells_at_its_shot_count_and_zero_shot_cells_only_by_zero_shot_ones(tmp_path):
    p = grid.plan("smoke", ["model=tiny_llama", "head=lm", "method=lora", "task=cb,rte", "shots=0,16,32", "seed=0,1"],
                  tmp_path)
    cell = {(c.task, c.shots, c.seed): c for c in p.cells}

    def finished(key: tuple, seconds: float) -> None:
        (d := p.cell_dir(cell[key])).mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({"wall_time_s": seconds}))

    finished(("cb", 0, 0), 5.0)  # zero-shot: no training
    finished(("cb", 16, 0), 100.0)
    finished(("cb", 32, 0), 300.0)  # more shots, longer: d_task is a pass over all k shots
    assert p.eta([cell[("cb", 32, 1)]], 1)[0] == pytest.approx(300.0)  # not the task-and-method mean (200)
    assert p.eta([cell[("rte", 0, 0)]], 1)[0] == pytest.approx(5.0)  # another task's zero-shot cell, not trained ones
    assert p.eta([cell[("rte", 16, 0)]], 1)[0] == pytest.approx(200.0)  # trained cells only: (100 + 300) / 2


def test_unreadable_results_json_counts_as_not_done(tree):
    path = tree / "smoke" / "cb/prompt/k32/s0" / "results.json"
    path.write_text(path.read_text()[:100])  # what a non-atomic writer could leave behind
    assert grid.main(["smoke", "--out", str(tree)]) == 0
    assert events(tree)["cb/prompt/k32/s0"] == 2
    json.loads(path.read_text())


def test_results_of_another_config_are_rerun_with_overwrite_not_skipped(tree):
    args = ["smoke", "--out", str(tree), "task=cb", "method=prompt", "trainer.steps=1"]
    assert grid.main(args) == 2  # a finished result: refused without --overwrite (tests/test_grid_trust.py)
    assert grid.main([*args, "--overwrite"]) == 0
    assert events(tree) == Counter({**dict.fromkeys(CELLS, 1), "cb/prompt/k32/s0": 2})
    assert json.loads((tree / "smoke" / "cb/prompt/k32/s0" / "results.json").read_text())["steps"] == 1


def test_results_from_another_checkout_or_an_older_gradft_still_count_as_done(tree):
    import yaml

    for cell in CELLS:  # as if written in /elsewhere, before trainer.precision existed
        path = tree / "smoke" / cell / "config.yaml"
        cfg = yaml.safe_load(path.read_text())
        for key in ("superglue_root", "fewglue_root", "domain_root"):
            if key in cfg["data"]:
                cfg["data"][key] = "/elsewhere/shared/data/" + key
        del cfg["trainer"]["precision"]
        path.write_text(yaml.safe_dump(cfg))
    assert grid.main(["smoke", "--out", str(tree)]) == 0
    assert events(tree) == Counter(dict.fromkeys(CELLS, 1))  # nothing rerun
    cfg = yaml.safe_load((tree / "smoke" / "cb/prompt/k32/s0" / "config.yaml").read_text())
    cfg["method"]["lr"] *= 2  # a change of what is computed does count
    (tree / "smoke" / "cb/prompt/k32/s0" / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert grid.main(["smoke", "--out", str(tree)]) == 0
    assert events(tree)["cb/prompt/k32/s0"] == 2


def test_the_key_holds_the_step_count_however_the_training_length_was_given():
    from gradft.tracking import config_key

    by_epochs = compose_run(["trainer.epochs=10", "paths.output_dir=."])  # 32 shots / batch 8 × 10 epochs = 40 steps
    assert config_key(by_epochs) == config_key(compose_run(["trainer.steps=40", "paths.output_dir=."]))
    assert config_key(by_epochs) != config_key(compose_run(["trainer.steps=41", "paths.output_dir=."]))
    assert config_key(by_epochs) != config_key(compose_run(["trainer.epochs=10", "shots=64", "paths.output_dir=."]))
    zero = ["model=tiny_llama", "head=lm", "shots=0", "paths.output_dir=."]  # no training: Table 1's k=0 is Figure 2's
    assert config_key(compose_run(zero)) == config_key(compose_run([*zero, "trainer.steps=40"]))


def test_a_cell_finished_by_a_sibling_grid_is_adopted_not_rerun(tree, caplog):
    """Figure 2's 32-shot cells are Table 1's: under the same --out, a grid copies a sibling's finished cell with the
    same key (here the sibling gave 2 steps as trainer.steps=2, this grid as half an epoch of 32 shots / batch 8)."""
    (tree / "smoke").rename(tree / "table1_like")
    with caplog.at_level("INFO", logger="gradft.experiments.grid"):
        assert grid.main(["smoke", "--out", str(tree), "trainer.steps=null", "trainer.epochs=0.5"]) == 0
    assert "4 cells adopted from sibling grids" in caplog.text
    assert events(tree) == Counter() and events(tree, "adopt") == Counter(dict.fromkeys(CELLS, 1))
    for cell in CELLS:
        for name in ("results.json", "config.yaml"):
            assert (tree / "smoke" / cell / name).read_bytes() == (tree / "table1_like" / cell / name).read_bytes()
    assert grid.main(["smoke", "--out", str(tree), "task=cb", "method=prompt", "trainer.steps=3", "--overwrite"]) == 0
    assert events(tree) == Counter({"cb/prompt/k32/s0": 1})  # another step count: run, not adopted


def test_a_file_tasks_key_does_not_depend_on_where_its_data_lives():
    """A domain task's root resolves from data.domain_root, i.e. from the checkout: committed Figure 3 cells must
    count as done in any clone (they were rerun before), while what the task computes still changes the key."""
    from gradft.tracking import config_key

    here = compose_run(["task=promise_nfr", "paths.output_dir=."])
    there = compose_run(["task=promise_nfr", "data.domain_root=/elsewhere/domain", "paths.output_dir=."])
    assert there.task.root == "/elsewhere/domain/promise_nfr" != here.task.root
    assert config_key(here) == config_key(there)
    assert config_key(compose_run(["task=promise_nfr", "task.split.seed=1", "paths.output_dir=."])) != config_key(here)
    # the prompt is read by head=lm only: a prompt option changed later does not unmake classifier results
    prompt = ["task=promise_nfr", "task.prompt.verbalizer=[' yes',' no']", "paths.output_dir=."]
    assert config_key(compose_run(prompt)) == config_key(here)
    assert config_key(compose_run([*prompt, "head=lm"])) != config_key(compose_run(["task=promise_nfr", "head=lm",
                                                                                  "paths.output_dir=."]))


def test_failing_cells_are_logged_and_the_grid_goes_on_with_nonzero_exit(tmp_path):
    assert grid.main(["smoke", "--out", str(tmp_path), "method.lr=-1"]) == 1
    assert events(tmp_path, "fail") == Counter(dict.fromkeys(CELLS, 1))
    for cell in CELLS:
        assert "method.lr=-1" in json.loads((tmp_path / "smoke" / cell / "error.json").read_text())["error"]
        assert not (tmp_path / "smoke" / cell / "results.json").exists()


def test_figure2_skips_and_records_cells_whose_pool_is_too_small(tmp_path):
    p = grid.plan("figure2", ["method=lora", "seed=0"], tmp_path)
    skipped = {(s["task"], s["shots"]) for s in p.skipped}
    assert skipped == {("boolq", k) for k in (64, 128, 256, 512)} | {("multirc", 256), ("multirc", 512),
                                                                      ("cb", 256), ("cb", 512), ("copa", 512)}
    assert all("pool has only" in s["reason"] for s in p.skipped)
    assert len(p.cells) == 6 * 6 - len(skipped)
    assert grid.main(["figure2", "--out", str(tmp_path), "--dry-run", "method=lora", "seed=0"]) == 0
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_the_zero_shot_cell_stays_under_the_grid_files_first_method_and_seed_however_the_axes_are_narrowed(tmp_path):
    """Zero-shot applies no method: one cell per task, always full/k0/s100 here, so a narrowed run finds the finished
    one instead of computing a lora/k0 twin with another key."""
    spec = tmp_path / "zs.yaml"
    spec.write_text("grid:\n  axes:\n    task: [cb, copa]\n    method: [full, lora, ours]\n    shots: [0, 32]\n"
                    "    seed: [100, 101]\n  overrides: [model=tiny_llama, head=lm, trainer.steps=2]\n")
    whole = grid.plan(str(spec), [], tmp_path)
    zero = sorted(c.rel for c in whole.cells if c.shots == 0)
    assert zero == ["cb/full/k0/s100", "copa/full/k0/s100"] and len(whole.cells) == 2 * (1 + 3 * 2)
    for narrowed in (["method=lora,ours"], ["method=ours", "seed=101"], ["seed=101"]):
        p = grid.plan(str(spec), narrowed, tmp_path)
        assert sorted(c.rel for c in p.cells if c.shots == 0) == zero
        assert {p.keys[c] for c in p.cells if c.shots == 0} == {whole.keys[c] for c in whole.cells if c.shots == 0}
        trained = {c.method for c in p.cells if c.shots}  # full trains only where the axes say
        assert trained == ({"lora", "ours"} if narrowed[0] == "method=lora,ours" else
                           {"ours"} if narrowed[0] == "method=ours" else {"full", "lora", "ours"})
    assert not any(c.shots == 0 for c in grid.plan(str(spec), ["shots=32"], tmp_path).cells)


def test_table1_grid_has_90_cells_with_seeded_data_draws(tmp_path):
    p = grid.plan("table1", [], tmp_path)
    assert len(p.cells) == 90 and not p.skipped
    assert {c.method for c in p.cells} == {"full", "adapter", "lora", "prompt", "ours"}
    assert all(c.data_seed == c.seed and c.shots == 32 for c in p.cells)
    assert p.cell_dir(p.cells[0]) == tmp_path / "table1" / "boolq" / "full" / "k32" / "s0"


def test_grid_cells_and_sweep_runs_draw_their_shots_per_seed_or_all_from_one_fixed_data_seed(tmp_path):
    """One rule (launch.task_seeds) for both: ``data_seed: seed`` gives each seed its own draw, an int one draw."""
    assert task_seeds(["cb", "rte"], range(2)) == [("cb", 0, 0), ("cb", 1, 1), ("rte", 0, 0), ("rte", 1, 1)]
    assert task_seeds(["cb"], [3, 4], 7) == [("cb", 3, 7), ("cb", 4, 7)]
    spec = tmp_path / "fixed.yaml"
    spec.write_text("grid:\n  axes:\n    task: [cb]\n    method: [prompt]\n    shots: [32]\n    seed: [0, 1]\n"
                    "  data_seed: 7\n  overrides: [model=tiny_bert, trainer.steps=2]\n")
    p = grid.plan(str(spec), [], tmp_path)
    assert [(c.rel, c.data_seed) for c in p.cells] == [("cb/prompt/k32/s0", 7), ("cb/prompt/k32/s1", 7)]
    assert "data_seed=7" in p.cell_overrides(p.cells[1])


def test_a_lock_held_by_a_live_process_is_respected_and_a_dead_ones_is_broken(tmp_path):
    lock = tmp_path / "cell" / ".lock"
    assert locks.acquire(lock) and not locks.acquire(lock)  # held by this (live) process
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": grid.HOST, "time": time.time()}))
    assert locks.acquire(lock)
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    lock.write_text(json.dumps({"pid": dead.pid, "host": "another-host", "time": time.time()}))
    assert not locks.acquire(lock)  # another machine's lock: never broken from here


@pytest.mark.slow
def test_two_grid_processes_on_one_tree_run_each_cell_once(tmp_path):
    procs = [cli("smoke", "--out", str(tmp_path), "--workers", "2"), cli("smoke", "--out", str(tmp_path))]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    assert events(tmp_path) == Counter(dict.fromkeys(CELLS, 1))
    assert events(tmp_path, "done") == Counter(dict.fromkeys(CELLS, 1))


@pytest.mark.slow
def test_sigkill_mid_grid_then_rerun_redoes_only_the_interrupted_cell(tmp_path):
    slow = "trainer.steps=30"  # a cell lasts ~2 s: long enough to be killed in the middle
    proc = cli("smoke", "--out", str(tmp_path), slow)
    deadline = time.time() + 300
    while time.time() < deadline and not (events(tmp_path, "done") and len(events(tmp_path)) >= 2):
        time.sleep(0.05)
    done, started = set(events(tmp_path, "done")), set(events(tmp_path))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted = started - done - set(events(tmp_path, "done"))
    assert len(interrupted) == 1, (started, done)
    cell = tmp_path / "smoke" / interrupted.pop()
    assert not (cell / "results.json").exists() and (cell / ".lock").exists()  # a dead process's lock
    finished = set(events(tmp_path, "done"))

    assert grid.main(["smoke", "--out", str(tmp_path), slow]) == 0
    starts = events(tmp_path)
    assert all(starts[c] == 1 for c in finished)
    assert starts[str(cell.relative_to(tmp_path / "smoke"))] == 2
    assert set(starts) == CELLS
    for c in CELLS:
        json.loads((tmp_path / "smoke" / c / "results.json").read_text())


@pytest.mark.parametrize("path", ["results/smollm2/table1_smollm2/cb/ours/k32/s100/.lock",
                                  "results/tuning/smollm2/.tune_smollm2_ours.budget.lock"])
def test_locks_of_running_cells_and_studies_under_results_are_never_committed(path):
    repo = Path(__file__).resolve().parent.parent
    if not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    # a committed lock holds this host's pid: a clone on another host would see the cell as taken, for good
    assert subprocess.run(["git", "check-ignore", "-q", path], cwd=repo).returncode == 0


def test_a_cell_that_diverged_is_kept_as_an_outcome_and_run_again_only_when_asked(tmp_path, caplog):
    def starts() -> int:
        lines = (tmp_path / "smoke" / "runs.jsonl").read_text().splitlines()
        return sum(json.loads(x)["event"] == "start" for x in lines)

    # one update puts the weights at ~1e30: every later loss is non-finite, past trainer.max_skipped=1
    args = ["smoke", "--out", str(tmp_path), "task=cb", "method=full", "trainer.steps=4", "trainer.max_skipped=1",
            "method.lr=1e30"]
    with caplog.at_level("INFO", logger="gradft.experiments.grid"):
        assert grid.main(args) == 0  # the grid is complete: its one cell's outcome is "diverged"
    err = json.loads((tmp_path / "smoke" / "cb/full/k32/s0" / "error.json").read_text())
    assert err["diverged"] and err["seed"] == 0 and err["config_key"]
    assert "1/1 cells done (1 of them diverged" in caplog.text
    assert grid.main(args) == 0 and starts() == 1  # kept: the same config diverges the same way
    assert grid.main([*args, "--retry-diverged"]) == 0 and starts() == 2
    assert grid.main([*args[:-1], "method.lr=1e31"]) == 0 and starts() == 3  # another config: another cell


def test_cells_run_seed_by_seed_so_a_stopped_grid_has_every_method_and_k_at_its_first_seeds(tmp_path):
    spec = tmp_path / "order.yaml"
    spec.write_text("grid:\n  axes:\n    task: [cb, rte]\n    method: [prompt, lora]\n    shots: [8, 16]\n"
                    "    seed: [5, 3]\n  data_seed: seed\n  overrides: [model=tiny_bert, trainer.steps=2]\n")
    p = grid.plan(str(spec), [], tmp_path)
    assert [c.seed for c in p.cells] == [5] * 8 + [3] * 8  # the axis' order, not sorted
    first = p.cells[:8]  # one seed's cells: every task × method × shots, in that order
    assert [(c.task, c.method, c.shots) for c in first] == [
        (t, m, k) for t in ("cb", "rte") for m in ("prompt", "lora") for k in (8, 16)]

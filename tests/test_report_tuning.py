"""The tuning block says whether the tuning could select (issue 28, item 2): per study the objective's standard
error, best − default and best − runner-up with a paired bootstrap CI over the (task, seed) cells both trials ran,
the λ = 0 control trials marked; "not recorded" / "not stored" where an old study lacks them. Real Optuna SQLite
studies built in the test (trials added with their user attrs: nothing is trained), written into a grid file by
``gradft.experiments.tuned`` and read back by the report as ``--tuning`` does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import yaml

from gradft.experiments import tuned
from gradft.experiments.signal import objective_stats
from gradft.experiments.stats import bootstrap_mean_ci
from gradft.report import build as report
from gradft.report.table1 import tuning_lines

LR = {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}
BASE = {"cb/s0": 0.60, "cb/s1": 0.62, "rte/s0": 0.55, "rte/s1": 0.57}
TRIALS = [  # (lr, per-(task, seed) shift, control)
    (1e-3, {"cb/s0": 0.00, "cb/s1": 0.00, "rte/s0": 0.00, "rte/s1": 0.00}, None),  # #0: the default point
    (3e-3, {"cb/s0": 0.06, "cb/s1": 0.02, "rte/s0": 0.05, "rte/s1": 0.03}, None),  # #1: the best
    (5e-4, {"cb/s0": 0.01, "cb/s1": 0.05, "rte/s0": 0.02, "rte/s1": 0.04}, None),  # #2: the runner-up
    (1e-3, {"cb/s0": -0.02, "cb/s1": -0.01, "rte/s0": 0.0, "rte/s1": -0.03}, {"guidance.lambda1": 0}),  # #3
]


def make_study(tmp: Path, name: str, cells: bool) -> Path:
    spec = tmp / f"{name}.yaml"
    spec.write_text(yaml.safe_dump({
        "study_name": name, "storage": f"sqlite:///{tmp}/{name}.db", "out_dir": str(tmp / "out"), "n_trials": 4,
        "tasks": ["cb", "rte"], "n_seeds": 2, "space": {"method.lr": LR}, "sampler": {"name": "random"},
        "base": ["method=lora", "model=tiny_bert"], "enqueue": [{"method.lr": 1e-3}]}))
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{tmp}/{name}.db", direction="maximize")
    for lr, shift, control in TRIALS:
        runs = {k: v + shift[k] for k, v in BASE.items()}
        attrs = {**({"select_accuracy_runs": runs, **objective_stats(runs)} if cells else {}),
                 **({"control": control} if control else {})}
        study.add_trial(optuna.trial.create_trial(
            params={"method.lr": lr}, distributions={"method.lr": optuna.distributions.FloatDistribution(
                1e-4, 1e-2, log=True)}, value=sum(runs.values()) / len(runs), user_attrs=attrs))
    return spec


def block(tmp: Path, spec: Path) -> str:
    assert tuned.main([str(spec), "--name", spec.stem, "--conf-dir", str(tmp / "conf"), "--seeds", "100,101"]) == 0
    node = report._tuning(tmp / "conf" / "experiment" / f"{spec.stem}.yaml")  # what `report --tuning` reads
    return "\n".join(tuning_lines(node))


def lora_row(md: str) -> list[str]:
    rows = [line for line in md.splitlines() if line.startswith("| lora | #1 |")]  # the noise block's row
    assert rows, md
    return rows[0].split(" | ")


def ci_text(shift_a: dict, shift_b: dict) -> str:
    d = [shift_a[k] - shift_b[k] for k in sorted(shift_a)]
    lo, hi = bootstrap_mean_ci(d)
    return f"{100 * sum(d) / len(d):+.2f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def test_the_tuning_block_prints_the_objectives_se_and_best_minus_default_and_runner_up_with_paired_cis(tmp_path):
    md = block(tmp_path, make_study(tmp_path, "tune_lora", cells=True))
    best = {k: v + TRIALS[1][1][k] for k, v in BASE.items()}
    se = objective_stats(best)["select_accuracy_se"]
    cols = lora_row(md)
    assert cols[2] == f"{100 * se:.2f}"  # the best trial's objective SE, in points
    assert cols[3] == f"{ci_text(TRIALS[1][1], TRIALS[0][1])} vs #0"  # best − default, paired over 4 cells
    assert cols[4] == f"{ci_text(TRIALS[1][1], TRIALS[2][1])} vs #2"  # best − runner-up
    assert "#3 " in cols[5] and "(guidance.lambda1=0)" in cols[5]  # the λ = 0 control trial, marked
    assert "objective SE" in md and "best − runner-up" in md


def test_an_old_study_without_se_or_per_cell_accuracies_says_so(tmp_path):
    md = block(tmp_path, make_study(tmp_path, "tune_old", cells=False))
    row = lora_row(md)
    assert row[2] == "not recorded"
    assert row[3].endswith("(no CI: per-(task, seed) accuracies not stored) vs #0")
    old = tuning_lines({"lora": {"best": {"method.lr": 1e-3}, "best_trial": 4, "n_trials": 4, "complete": 4,
                                 "pruned": 0, "failed": 0, "space": {"method.lr": LR}, "select_accuracy": 0.6}})
    assert any(line.startswith("| lora | #4 | not recorded |") for line in old)  # a grid file from before


def test_status_counts_each_studys_trials_against_its_budget_and_prints_its_noise_block_so_far(tmp_path, capsys):
    from gradft.report import tuning as tuning_mod

    spec = make_study(tmp_path, "lora", cells=True)
    study = optuna.load_study(study_name="lora", storage=f"sqlite:///{tmp_path}/lora.db")
    study.enqueue_trial({"method.lr": 2e-3})  # a trial not yet run: waiting, not done
    missing = tmp_path / "prompt.yaml"  # a spec whose study has not started
    missing.write_text(spec.read_text().replace("lora", "prompt"))
    assert tuning_mod.main([str(spec), str(missing)]) == 0
    out = capsys.readouterr().out
    best = 100 * sum(v + TRIALS[1][1][k] for k, v in BASE.items()) / len(BASE)
    assert f"| lora | 4 | 4 | 0 | 0 | 1 | {best:.1f} (#1) |" in out
    assert "| prompt | 4 | not started |" in out and not (tmp_path / "prompt.db").exists()  # looking creates none
    row = next(line for line in out.splitlines() if line.startswith("| lora | #1 |")).split(" | ")
    assert row[3] == f"{ci_text(TRIALS[1][1], TRIALS[0][1])} vs #0"  # best − default, as the report's block


def test_status_counts_the_runs_left_less_those_an_interrupted_trial_holds_and_times_them_on_this_hardware(tmp_path,
                                                                                                        capsys):
    """4 trials × (2 tasks × 2 seeds): 2 complete, #2 interrupted with 1 finished run (reused by its retry), #3 failed
    by an error (its runs are not reused): 2 × 4 − 1 = 7 runs left, timed by the runs on this machine (a run on
    other hardware, 60 000 s, is not the estimate; a run copied into its retry's folder is timed once). A study whose
    runs all ran elsewhere is timed by the other studies' runs here ("pooled"), not by its own elsewhere."""
    import json

    from gradft.report import tuning as tuning_mod
    from gradft.tracking import cpu_name

    dist = {"method.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    state = optuna.trial.TrialState

    def new_study(name: str, trials: list[tuple[float, Any, dict]]) -> tuple[Path, optuna.Study]:
        spec = make_study(tmp_path, name, cells=False)
        storage = f"sqlite:///{tmp_path}/{name}.db"
        optuna.delete_study(study_name=name, storage=storage)
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        for lr, st, attrs in trials:
            study.add_trial(optuna.trial.create_trial(params={"method.lr": lr}, distributions=dist, state=st,
                                                      value=0.6 if st == state.COMPLETE else None, user_attrs=attrs))
        return spec, study

    def run(study: str, trial: int, cell: str, seconds: float, hardware: str) -> None:
        d = tmp_path / "out" / study / f"trial_{trial}" / cell
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({"wall_time_s": seconds, "env": {"hardware": hardware},
                                                    "run": f"{trial}/{cell}"}))  # each run its own (as real ones)

    cells = ("cb/s0", "cb/s1", "rte/s0", "rte/s1")
    lora, study = new_study("lora", [(1e-3, state.COMPLETE, {}), (2e-3, state.COMPLETE, {}),
                                     (3e-3, state.FAIL, {"interrupted": "SIGTERM"}),
                                     (4e-3, state.FAIL, {"error": "boom"})])
    for trial in (0, 1):
        for cell in cells:
            run("lora", trial, cell, 60_000 if (trial, cell) == (1, "rte/s1") else 600,
                "elsewhere" if trial else cpu_name())
    run("lora", 2, "cb/s0", 1200, cpu_name())
    run("lora", 3, "cb/s0", 600, cpu_name())
    run("lora", 3, "cb/s1", 600, cpu_name())
    prompt, _ = new_study("prompt", [(1e-3, state.COMPLETE, {})])
    for cell in cells:
        run("prompt", 0, cell, 60, "elsewhere")

    def rows() -> dict[str, list[str]]:
        assert tuning_mod.main([str(lora), str(prompt), "--workers", "2"]) == 0
        out = capsys.readouterr().out
        return {r.split(" | ")[0][2:]: r.split(" | ")[-2:] for r in out.splitlines() if " | 4 | " in r}

    here = (4 * 600 + 1200 + 2 * 600) / 7  # the 7 runs timed here: 685.7 s
    want = {"lora": ["7", f"{7 * here / 3600:.1f} |"],  # 1.3 (with the 60 000 s run: 18.1; with the copy: 1.5)
            "prompt": ["12", f"{12 * here / 3600:.1f} (pooled) |"]}  # 3 trials × 4 runs; by its own 60 s: 0.2
    assert rows() == want
    study.enqueue_trial({"method.lr": 3e-3}, user_attrs={"retry_of": 2})  # the next start's retry of #2 (trial 4)
    copy = tmp_path / "out" / "lora" / "trial_4" / "cb" / "s0"  # it has copied #2's finished run (earlier_run)
    copy.mkdir(parents=True)
    (copy / "results.json").write_text((tmp_path / "out/lora/trial_2/cb/s0/results.json").read_text())
    assert rows() == want  # still 7 left, the copy timed once

"""From finished sweeps (real Optuna SQLite studies of real tiny runs) to the grid that evaluates them: every method
at its own best point, ablations of ours minus the term they switch off, fresh seeds only, unmet budgets refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gradft.experiments import grid, sweep, tuned
from gradft.experiments.launch import compose_run
from gradft.report import table1 as report_table1
from gradft.report.build import report

FAST = ["trainer.steps=1"]


def spec(tmp: Path, method: str, space: dict, n_trials: int = 2, own: tuple[str, ...] = ()) -> Path:
    doc = {"study_name": f"tune_{method}", "storage": f"sqlite:///{tmp}/{method}.db", "out_dir": str(tmp / "out"),
           "n_trials": n_trials, "tasks": ["cb"], "n_seeds": 2, "space": space, "sampler": {"name": "random"},
           "base": [f"method={method}", "model=tiny_bert", "trainer.threads=1", "metrics.every=0",
                    "logger.mode=disabled", "eval.max_examples=8", *own],
           "heartbeat": {"interval": 1, "grace_period": 3}}
    path = tmp / f"{method}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


LR = {"method.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> tuple[Path, list[Path]]:
    tmp = tmp_path_factory.mktemp("tuned")
    paths = [spec(tmp, "lora", LR),
             spec(tmp, "ours", {**LR, "guidance.lambda1": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
                  own=("guidance.fd_r=0.02",))]  # an option of ours' own: in its study's base, not lora's
    for p in paths:
        assert sweep.main([str(p), "--conf-dir", str(tmp / "conf"), *FAST]) == 0
    return tmp, paths


def test_the_grid_runs_each_method_at_its_best_point_and_ablations_drop_their_term(studies):
    tmp, paths = studies
    conf = tmp / "conf"
    assert tuned.main([*map(str, paths), "--name", "t1", "--conf-dir", str(conf), "--seeds", "100,101"]) == 0
    text = (conf / "experiment" / "t1.yaml").read_text()
    assert text.startswith("# @package _global_")
    doc = yaml.safe_load(text)
    best = {m: sweep.optuna.load_study(study_name=f"tune_{m}", storage=f"sqlite:///{tmp}/{m}.db").best_params
            for m in ("lora", "ours")}
    g = doc["grid"]
    assert g["axes"]["seed"] == [100, 101] and g["axes"]["method"][:2] == ["lora", "ours"]
    assert {"ours_mag", "ours_dir", "ours_every4", "ours_init"} <= set(g["axes"]["method"])
    assert "model=tiny_bert" in g["overrides"] and "metrics.every=0" not in g["overrides"]  # metrics on in eval
    p = grid.plan(str(conf / "experiment" / "t1.yaml"), ["task=cb"], tmp / "grid")
    cfgs = {c.method: compose_run([*p.cell_overrides(c), "paths.output_dir=."]) for c in p.cells}
    assert cfgs["lora"].method.lr == pytest.approx(best["lora"]["method.lr"])
    assert cfgs["ours"].guidance.lambda1 == pytest.approx(best["ours"]["guidance.lambda1"])
    assert cfgs["ours_mag"].guidance.lambda1 == 0.0  # its switched-off term is not overwritten by ours' value
    assert cfgs["ours_mag"].method.lr == pytest.approx(best["ours"]["method.lr"])
    assert cfgs["ours_init"].guidance.d_prior == "init"
    assert "guidance.fd_r=0.02" not in g["overrides"]  # lora's cells have no guidance node to set it on
    assert all(cfgs[m].guidance.fd_r == 0.02 for m in ("ours", "ours_mag", "ours_dir", "ours_every4", "ours_init"))
    assert cfgs["ours_init"].guidance.lambda1 == pytest.approx(best["ours"]["guidance.lambda1"])
    assert doc["tuning"]["lora"]["n_trials"] == 2 and doc["tuning"]["lora"]["best"] == best["lora"]


def test_tuning_seeds_are_never_evaluation_seeds(studies):
    tmp, paths = studies
    assert tuned.main([*map(str, paths), "--name", "t2", "--conf-dir", str(tmp / "conf"), "--seeds", "1,100"]) == 2


def test_an_unmet_budget_is_refused_unless_partial(studies, tmp_path):
    _, paths = studies
    doc = yaml.safe_load(paths[0].read_text())
    doc["n_trials"] = 5
    more = tmp_path / "lora.yaml"
    more.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match="2 of 5 trials"):
        tuned.study_summary(more)
    assert tuned.study_summary(more, partial=True)["complete"] == 2


def test_a_best_value_at_the_edge_of_its_range_is_flagged():
    d = {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}
    assert tuned.at_edge(1.1e-4, d) == "low" and tuned.at_edge(9.5e-3, d) == "high" and tuned.at_edge(1e-3, d) is None


def test_a_figure2_grid_takes_its_tasks_and_shots_from_the_axes_not_from_the_tuning_base(studies):
    tmp, paths = studies
    conf = tmp / "conf"
    assert tuned.main([*map(str, paths), "--name", "f2", "--conf-dir", str(conf), "--seeds", "100", "--tasks",
                       "cb,rte", "--shots", "16,64", "--no-ablations", "--overrides", "eval.max_examples=700"]) == 0
    text = (conf / "experiment" / "f2.yaml").read_text()
    g = yaml.safe_load(text)["grid"]
    # the header's command writes the same grid again: every option that shaped it is in it
    assert (f"python -m gradft.experiments.tuned {paths[0]} {paths[1]} --name f2 --seeds 100 "
            "--tasks cb,rte --shots 16,64 "
            "--no-ablations --overrides eval.max_examples=700)") in text
    assert g["axes"]["task"] == ["cb", "rte"] and g["axes"]["shots"] == [16, 64]
    assert g["axes"]["method"] == ["lora", "ours"]  # no ablation rows
    assert not any(o.startswith("shots=") for o in g["overrides"]) and g["overrides"][-1] == "eval.max_examples=700"
    p = grid.plan(str(conf / "experiment" / "f2.yaml"), ["task=cb", "method=lora"], tmp / "grid2")
    assert sorted(compose_run([*p.cell_overrides(c), "paths.output_dir=."]).shots for c in p.cells) == [16, 64]


def test_a_study_continued_after_widening_its_range_still_meets_the_common_budget_and_says_so(studies, tmp_path):
    tmp, paths = studies
    doc = yaml.safe_load(paths[0].read_text())  # lora: widen its lr range, continue by one enqueued trial
    doc.update(n_trials=3, space={"method.lr": {**LR["method.lr"], "high": 0.1}}, enqueue=[{"method.lr": 0.05}])
    widened = tmp_path / "lora.yaml"
    widened.write_text(yaml.safe_dump(doc))
    assert sweep.main([str(widened), "--conf-dir", str(tmp_path / "conf"), *FAST]) == 0  # the 3rd trial runs
    conf = str(tmp_path / "conf")
    # 3 trials against ours' 2, unexplained: refused
    assert tuned.main([str(widened), str(paths[1]), "--name", "w", "--conf-dir", conf, "--seeds", "100"]) == 2
    doc["widened"] = 1
    widened.write_text(yaml.safe_dump(doc))
    assert tuned.main([str(widened), str(paths[1]), "--name", "w", "--conf-dir", conf, "--seeds", "100"]) == 0
    text = (tmp_path / "conf" / "experiment" / "w.yaml").read_text()
    assert "same budget (2 trials; lora +1 after widening a range whose best point sat at its edge)" in text
    t = yaml.safe_load(text)["tuning"]["lora"]
    assert (t["n_trials"], t["widened"], t["complete"]) == (3, 1, 3)
    assert "| lora | 3 = 2 + 1 after widening (3 / 0 / 0) |" in "\n".join(report_table1.tuning_lines({"lora": t}))


def test_a_best_value_at_the_parameters_own_limit_is_a_note_not_a_call_to_widen(tmp_path):
    """ours_update's λ's are fractions ≤ 1 (a value past 1 fails the run's checks): its best λ2 at 1.0's end of the
    range is noted in the grid file, not flagged for widening; the hessian reading's λ2 ≤ 1 and LoRA's lr are ranges."""
    from gradft.experiments.sweep_spec import load_spec

    lam = {"type": "float", "low": 1e-3, "high": 1.0, "log": True}
    update = load_spec(spec(tmp_path, "ours_update", {**LR, "guidance.lambda2": lam}))
    hessian = load_spec(spec(tmp_path, "ours", {**LR, "guidance.lambda2": lam}))
    assert tuned.limit_of(update, "guidance.lambda2", "high")
    assert not tuned.limit_of(update, "guidance.lambda2", "low")  # 5e-4 is a valid fraction: the range's own end
    assert not tuned.limit_of(hessian, "guidance.lambda2", "high")
    assert not tuned.limit_of(update, "method.lr", "high")


@pytest.mark.slow
def test_untrained_rows_are_written_before_any_study_and_the_tuned_grid_adopts_their_icl_cells(tmp_path):
    lm = ("head=lm", "model=tiny_llama")
    paths = [spec(tmp_path, m, LR, n_trials=1, own=lm) for m in ("full", "lora")]
    conf, out = tmp_path / "conf", tmp_path / "results"
    assert not list(tmp_path.glob("*.db"))  # no study exists yet
    assert tuned.main([*map(str, paths), "--name", "u", "--conf-dir", str(conf), "--seeds", "100,101",
                       "--tasks", "cb", "--shots", "0,32", "--untrained"]) == 0
    text = (conf / "experiment" / "u.yaml").read_text()
    assert "--untrained" in text and not list(tmp_path.glob("*.db"))  # the command to write it again; no study read
    p = grid.plan(str(conf / "experiment" / "u.yaml"), [], out / "u")
    assert sorted((c.method, c.shots, c.seed) for c in p.cells) == [("icl", 0, 100), ("icl", 32, 100),
                                                                    ("icl", 32, 101)]  # one zero-shot cell
    assert grid.main([str(conf / "experiment" / "u.yaml"), "--out", str(out)]) == 0
    report(out / "u", tmp_path / "rep", all_tasks=True, tuning=conf / "experiment" / "u.yaml")  # as make report does
    table = (tmp_path / "rep" / "table1.md").read_text()
    assert "| zero-shot |" in table and "| icl |" in table and not (tmp_path / "rep" / "answer.md").exists()
    assert "None: these rows train nothing" in table and "| Method | trials" not in table  # no empty tuning table

    for path in paths:  # later, where the studies can run: the tuned grid of the same setting
        assert sweep.main([str(path), "--conf-dir", str(conf), *FAST]) == 0
    assert tuned.main([*map(str, paths), "--name", "t", "--conf-dir", str(conf), "--seeds", "100,101",
                       "--tasks", "cb", "--shots", "0,32"]) == 0
    assert "icl" in yaml.safe_load((conf / "experiment" / "t.yaml").read_text())["grid"]["axes"]["method"]
    assert grid.main([str(conf / "experiment" / "t.yaml"), "--out", str(out), "method=icl"]) == 0
    events = [json.loads(line) for line in (out / "t" / "runs.jsonl").read_text().splitlines()]
    assert sorted(e["cell"] for e in events if e["event"] == "adopt") == ["cb/icl/k32/s100", "cb/icl/k32/s101"]
    assert not any(e["event"] == "start" and "/k32/" in e["cell"] for e in events)  # ICL was not run again
    icl = out / "t" / "cb" / "icl" / "k32" / "s100" / "results.json"
    assert icl.read_text() == (out / "u" / "cb" / "icl" / "k32" / "s100" / "results.json").read_text()


def test_untrained_rows_need_an_lm_head(tmp_path):
    path = spec(tmp_path, "lora", LR)  # a classifier head: nothing to score without training
    assert tuned.main([str(path), "--name", "u", "--conf-dir", str(tmp_path / "conf"), "--untrained"]) == 2
    assert not (tmp_path / "conf" / "experiment" / "u.yaml").exists()

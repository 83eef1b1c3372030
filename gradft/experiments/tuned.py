"""Tuned configs from finished sweeps: ``python -m gradft.experiments.tuned sweeps/tune_minilm_*.yaml --name
table1_minilm``.

Owns turning the fair-tuning studies (one per method, the same trial budget, selection split only) into the grid
that evaluates them: ``conf/experiment/<name>.yaml``, a ``# @package _global_`` experiment file whose ``grid`` node
has every method's best values as ``per_method`` overrides, the ablation rows of ours (``ours_mag``, ``ours_dir``,
``ours_every4``, ``ours_init``: ours' tuned values minus the one they switch off), fresh evaluation seeds (never a
tuning seed), an LM-head grid's (``head=lm``) untuned ``icl`` row (in-context learning: nothing to tune), and a
``tuning`` node recording each study's budget, ranges, best trial, its selection accuracy and whether the best value
sits at the edge of its range (then the range was wrong: widen it and continue the study; unless that end is
the parameter's own limit, e.g. ours_update's λ ≤ 1: then a note), and whether the study
could select (``selection``: the objective's SE, best − default and best − runner-up with paired CIs, the λ = 0
controls; ``gradft.experiments.signal.selection_summary``).
A study that has not met its budget is refused unless ``--partial`` (the file then says so). Figure 2's grid is the
same with ``--tasks cb,copa,rte,wic --shots 16,32,64,128,256 --no-ablations`` and the full/lora/ours studies.
``--untrained`` writes, from the studies' specs alone (before any trial), the LM-head rows that train nothing:
zero-shot and ICL, cells the tuned grid adopts later (where no GPU runs the studies, these rows still exist).
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

from gradft import CONF_DIR
from gradft.config.schema import validate
from gradft.experiments.launch import compose_run
from gradft.experiments.signal import selection_summary, trial_values
from gradft.experiments.sweep import check_guidance_version
from gradft.experiments.sweep_spec import Spec, load_spec
from gradft.tracking import atomic_write

TASKS = ["boolq", "cb", "copa", "multirc", "rte", "wic"]
ABLATIONS = {"ours_mag": "guidance.lambda1", "ours_dir": "guidance.lambda2", "ours_every4": None, "ours_init": None}
EDGE = 0.05  # a best value within 5% of its range's width (log width for log ranges) of a bound is at the edge


def at_edge(value: float, d: dict[str, Any]) -> str | None:
    """'low' / 'high' when ``value`` sits at that end of its float/int range, else None."""
    if d["type"] == "categorical":
        return None
    lo, hi, v = float(d["low"]), float(d["high"]), float(value)
    if d.get("log"):
        lo, hi, v = math.log(lo), math.log(hi), math.log(v)
    if v - lo <= EDGE * (hi - lo):
        return "low"
    if hi - v <= EDGE * (hi - lo):
        return "high"
    return None


def limit_of(spec: Spec, key: str, end: str) -> bool:
    """Whether the ``end`` ('low'/'high') of ``key``'s range is the parameter's own limit: a value just past it fails
    the run's checks naming the key (ours_update's λ's are fractions ≤ 1). A best value there has nothing to widen."""
    d = spec.space[key]
    lo, hi = float(d["low"]), float(d["high"])
    past = (hi * 2 if d.get("log") else 2 * hi - lo) if end == "high" else (lo / 2 if d.get("log") else 2 * lo - hi)
    if d["type"] == "int":
        past = int(past)
    try:
        validate(compose_run([*spec.base, f"task={spec.tasks[0]}", f"{key}={past!r}", "paths.output_dir=."]))
    except ValueError as e:
        return key in str(e)
    return False


def study_settings(spec: Spec) -> dict[str, Any]:
    """What a study fixes before any trial: its method, budget, tuning seeds and base settings (split into the
    method's own ``guidance.*`` options and those of every cell). ``--untrained`` needs no more than this."""
    return {"method": next(o.split("=", 1)[1] for o in spec.base if o.startswith("method=")),
            "study": spec.study_name, "n_trials": spec.n_trials, "widened": spec.widened,
            "tasks": spec.tasks, "tuning_seeds": spec.n_seeds,
            # guidance.* options of the method's own (ours' fd_r; guidance=none has none): its rows, not every cell's
            "own": [o for o in spec.base if o.startswith("guidance.")],
            "base": [o for o in spec.base if not o.startswith(("method=", "metrics.every=", "shots=", "guidance."))]}


def study_summary(spec_path: str | Path, partial: bool = False) -> dict[str, Any]:
    """The best trial of one sweep and what it cost; raises ValueError if the budget is unmet (unless partial)."""
    spec = load_spec(spec_path)
    study = optuna.load_study(study_name=spec.study_name, storage=spec.storage)
    check_guidance_version(study, spec)  # a pre-fix guided study is not a current tuning result
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    if len(counted) < spec.n_trials and not partial:
        raise ValueError(f"{spec_path}: {len(counted)} of {spec.n_trials} trials done; finish the sweep "
                         f"(python -m gradft.experiments.sweep {spec_path}) or pass --partial")
    best = study.best_trial
    edges = {k: e for k, v in best.params.items() if (e := at_edge(v, spec.space[k]))}
    limits = {k: e for k, e in edges.items() if limit_of(spec, k, e)}  # at the parameter's own limit: no widening
    return {**study_settings(spec), "spec": str(spec_path),
            "complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "failed": sum(t.state == TrialState.FAIL for t in trials),
            "best_trial": best.number, "select_accuracy": best.value,
            "select_accuracy_std": best.user_attrs.get("select_accuracy_std"),
            "select_accuracy_se": best.user_attrs.get("select_accuracy_se"),
            "best": trial_values(best, spec.space),  # a winning λ = 0 control point keeps its λ = 0
            # the objective's SE, best − default / − runner-up with paired CIs, the λ = 0 controls (report/tuning.py)
            "selection": selection_summary(trials, spec.enqueue),
            "space": spec.space,
            "at_edge": {k: e for k, e in edges.items() if k not in limits}, "at_limit": limits}


def widened_note(studies: list[dict[str, Any]]) -> str:
    """`; adapter +1 after widening its range` where a study continued past the common budget (the edge rule)."""
    extra = [f"{s['method']} +{s['widened']}" for s in studies if s.get("widened")]
    return f"; {', '.join(extra)} after widening a range whose best point sat at its edge" if extra else ""


def grid_doc(name: str, studies: list[dict[str, Any]], seeds: list[int], partial: bool,
             tasks: list[str] = TASKS, shots: list[int] = (32,), ablations: bool = True,
             extra: list[str] = ()) -> dict[str, Any]:
    bases = {tuple(s["base"]) for s in studies}
    if len(bases) != 1 or len({s["n_trials"] - s.get("widened", 0) for s in studies}) != 1:
        raise ValueError("the studies differ in their base settings or trial budget: not a fair comparison")
    per_method = {s["method"]: [*s["own"], *(f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}"
                                             for k, v in s["best"].items())] for s in studies}
    methods = [s["method"] for s in studies]
    if "head=lm" in [*next(iter(bases)), *extra]:  # an LM-head table has the in-context-learning row (untuned)
        methods.append("icl")
    if "ours" in per_method and ablations:
        for ablation, dropped in ABLATIONS.items():
            per_method[ablation] = [o for o in per_method["ours"] if not dropped or not o.startswith(dropped + "=")]
            methods.append(ablation)
    return {"grid": {"name": name, "axes": {"task": list(tasks), "method": methods, "shots": list(shots),
                                            "seed": seeds},
                     "data_seed": "seed", "overrides": [*next(iter(bases)), *extra], "per_method": per_method,
                     "est_seconds_per_cell": 300},
            "tuning": {"partial": partial, "written": f"{datetime.now():%Y-%m-%d %H:%M}",
                       **{s["method"]: {k: v for k, v in s.items() if k not in ("method", "base", "own")}
                          for s in studies}}}


def untrained_doc(name: str, settings: list[dict[str, Any]], seeds: list[int], tasks: list[str],
                  shots: list[int], extra: list[str]) -> dict[str, Any]:
    """``--untrained``: the rows of an LM-head table that train nothing, zero-shot (k = 0) and in-context learning
    (k > 0), over the studies' shared base, before any study has run. Its ``icl`` cells are the tuned grid's, by path
    and config key: run under the same ``--out``, the tuned grid adopts them (``gradft.experiments.grid``); the
    zero-shot cell sits under the first method, ``icl`` here (``full`` there), so it runs again there (minutes)."""
    bases = {tuple(s["base"]) for s in settings}
    if len(bases) != 1:
        raise ValueError("the studies differ in their base settings: their grid would not be one table")
    base = [*next(iter(bases)), *extra]
    if "head=lm" not in base:
        raise ValueError("--untrained: zero-shot and in-context learning need head=lm in the studies' base")
    return {"grid": {"name": name, "axes": {"task": list(tasks), "method": ["icl"], "shots": list(shots),
                                            "seed": seeds},
                     "data_seed": "seed", "overrides": base, "per_method": {}, "est_seconds_per_cell": 120},
            "tuning": {"untrained": True, "written": f"{datetime.now():%Y-%m-%d %H:%M}",
                       "studies": [s["study"] for s in settings]}}


def command(name: str, spec_paths: list[str], seeds: list[int], partial: bool, tasks: list[str],
            shots: list[int], ablations: bool, extra: list[str], untrained: bool = False) -> str:
    """The ``python -m gradft.experiments.tuned`` line that writes this grid again (options at their
    default left out)."""
    opts = [*map(str, spec_paths), "--name", name, "--seeds", ",".join(map(str, seeds))]
    opts += ["--tasks", ",".join(tasks)] if list(tasks) != TASKS else []
    opts += ["--shots", ",".join(map(str, shots))] if list(shots) != [32] else []
    opts += [] if ablations else ["--no-ablations"]
    opts += ["--partial"] if partial else []
    opts += ["--untrained"] if untrained else []
    opts += ["--overrides", *extra] if extra else []  # last: it takes every argument after it
    return shlex.join(["python", "-m", "gradft.experiments.tuned", *opts])


def write(name: str, spec_paths: list[str], seeds: list[int], partial: bool = False,
          conf_dir: Path = CONF_DIR, tasks: list[str] = TASKS, shots: list[int] = (32,),
          ablations: bool = True, extra: list[str] = (), untrained: bool = False) -> Path:
    if untrained:
        return write_untrained(name, spec_paths, seeds, conf_dir, tasks, shots, extra)
    studies = [study_summary(p, partial) for p in spec_paths]
    tuning_seeds = set(range(max(s["tuning_seeds"] for s in studies)))
    if clash := tuning_seeds & set(seeds):
        raise ValueError(f"evaluation seeds {sorted(clash)} were tuning seeds: use fresh ones")
    doc = grid_doc(name, studies, seeds, partial, tasks, shots, ablations, extra)
    edges = [f"{s['method']}: {k} at the {e} end" for s in studies for k, e in s["at_edge"].items()]
    budget = studies[0]["n_trials"] - studies[0].get("widened", 0)
    header = (f"# @package _global_\n# python -m gradft.experiments.grid {name} --workers 2    (written by: "
              f"{command(name, spec_paths, seeds, partial, tasks, shots, ablations, extra)})\n"
              f"# Each method at its best point of a sweep with the same budget ({budget} trials"
              f"{widened_note(studies)}) on the selection split; fresh seeds {seeds}.\n"
              + ("# PARTIAL: some studies have not met their budget.\n" if partial else "")
              + "".join(f"# WARNING {e}: widen the range and continue the study.\n" for e in edges)
              + "".join(f"# NOTE {s['method']}: {k} at the {e} end, the parameter's own limit (nothing to widen).\n"
                        for s in studies for k, e in s.get("at_limit", {}).items())
              + "# This file only describes the grid (the `grid` and `tuning` nodes are inert in a run).\n")
    return _save(conf_dir, name, header, doc)


def _save(conf_dir: Path, name: str, header: str, doc: dict[str, Any]) -> Path:
    path = conf_dir / "experiment" / f"{name}.yaml"
    atomic_write(path, header + OmegaConf.to_yaml(OmegaConf.create(doc)))
    return path


def write_untrained(name: str, spec_paths: list[str], seeds: list[int], conf_dir: Path, tasks: list[str],
                    shots: list[int], extra: list[str]) -> Path:
    settings = [study_settings(load_spec(p)) for p in spec_paths]
    doc = untrained_doc(name, settings, seeds, tasks, shots, extra)
    header = (f"# @package _global_\n# python -m gradft.experiments.grid {name} --workers 2    (written by: "
              f"{command(name, spec_paths, seeds, False, tasks, shots, True, extra, untrained=True)})\n"
              f"# The rows that train nothing (zero-shot at k = 0, in-context learning at k > 0) over the studies' "
              f"base; seeds {seeds}. No study was read: nothing here is tuned.\n"
              "# This file only describes the grid (the `grid` and `tuning` nodes are inert in a run).\n")
    return _save(conf_dir, name, header, doc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gradft.experiments.tuned", description=__doc__.split("\n\n")[0])
    p.add_argument("specs", nargs="+", help="one sweep yaml per method (sweeps/tune_<setting>_<method>.yaml)")
    p.add_argument("--name", required=True, help="the grid's name: conf/experiment/<name>.yaml")
    p.add_argument("--seeds", default="100,101,102,103,104", help="evaluation seeds (fresh: no tuning seed)")
    p.add_argument("--partial", action="store_true", help="accept studies that have not met their budget")
    p.add_argument("--tasks", default=",".join(TASKS), help="the grid's tasks (Figure 2: cb,copa,rte,wic)")
    p.add_argument("--shots", default="32", help="the grid's shot counts (Figure 2: 16,32,64,128,256)")
    p.add_argument("--no-ablations", action="store_true", help="ours without its ablation rows (Figure 2)")
    p.add_argument("--untrained", action="store_true", help="only the rows that train nothing (zero-shot, ICL; "
                                                            "head=lm), from the studies' base: no study is read")
    p.add_argument("--overrides", nargs="*", default=[], help="more overrides of every cell, after the tuning base "
                                                                "(e.g. eval.max_examples=1000: the stated cap)")
    p.add_argument("--conf-dir", type=Path, default=CONF_DIR)
    a = p.parse_args(argv)
    try:
        path = write(a.name, a.specs, [int(s) for s in a.seeds.split(",")], a.partial, a.conf_dir,
                     a.tasks.split(","), [int(k) for k in a.shots.split(",")], not a.no_ablations,
                     a.overrides, a.untrained)
    except ValueError as e:
        print(f"gradft.experiments.tuned: error: {e}", file=sys.stderr)
        return 2
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

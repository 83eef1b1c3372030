"""Optuna sweeps over ``run()``: ``python -m gradft.experiments.sweep sweeps/ours_rte.yaml [--n-trials N] [--workers
W] [...]``.

Owns: the study (created once, then resumed with ``load_if_exists``), the TOTAL trial budget (COMPLETE + PRUNED
trials across invocations and workers; failures do not use it up, and at most ``max_failures`` of one invocation are
tolerated: those of earlier invocations are listed and block nothing), the spec checked before the first trial
(``sweep_spec.check_space``), worker processes on one storage, per-trial sampler seeds (a resumed or parallel sweep
never re-proposes a point), the objective (mean FewGLUE dev32 accuracy over tasks × seeds — never the official val
split), pruning through ``run()``'s ``report`` callback, the best-params experiment file
``conf/experiment/best_<name>.yaml`` and the summary. The spec (``sweeps/*.yaml``), sampler, pruner and storage
(with the heartbeats that fail the trials of killed workers) are built in ``gradft.experiments.sweep_spec``; each
run's config, a trial's (task, seed) runs and the worker processes come from ``gradft.experiments.launch``, as a
grid's do. Why Optuna directly: docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import math
import os
import socket
import statistics
import sys
import time
import warnings
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.trial import TrialState

from gradft import CONF_DIR, stopping
from gradft.config.guidance import GUIDANCE_VERSION
from gradft.experiments.launch import compose_run, run_workers, set_worker_threads, task_seeds
from gradft.experiments.resume import earlier_run, retry_interrupted
from gradft.experiments.signal import control_overrides, enqueue_controls, objective_stats, trial_values
from gradft.experiments.sweep_spec import (
    Spec,
    check_space,
    derive_seed,
    load_spec,
    make_pruner,
    make_sampler,
    make_storage,
    mask,
)
from gradft.stopping import sigterm_interrupts
from gradft.tracking import atomic_write

log = logging.getLogger("gradft.experiments.sweep")
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
WAIT_S = 2.0


def budget_met(study: optuna.Study, spec: Spec) -> bool:
    """COMPLETE + PRUNED trials reach the budget (or a grid sampler has run every point)."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    done = sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states)
    return done >= spec.n_trials or (isinstance(study.sampler, optuna.samplers.GridSampler)
                                     and study.sampler.is_exhausted(study))


def _fmt(v: Any) -> str:
    if v is None or isinstance(v, bool):
        return str(v).lower().replace("none", "null")
    return repr(v) if isinstance(v, float) else str(v)


def _suggest(trial: optuna.Trial, name: str, d: dict[str, Any]) -> Any:
    if d["type"] == "float":
        return trial.suggest_float(name, d["low"], d["high"], log=d.get("log", False), step=d.get("step"))
    if d["type"] == "int":
        return trial.suggest_int(name, d["low"], d["high"], log=d.get("log", False), step=d.get("step", 1))
    return trial.suggest_categorical(name, list(d["choices"]))


class BudgetLock:
    """flock on a file next to the study: "count the trials, then create one" is atomic for every worker on this
    machine, so the budget is never overshot locally (workers on other machines can overshoot by one each)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        self.held = False

    def acquire(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.held = True

    def release(self) -> None:
        if self.held:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self.held = False


class Objective:
    def __init__(self, spec: Spec, extra: list[str], lock: BudgetLock, worker: str):
        self.spec, self.extra, self.lock, self.worker = spec, extra, lock, worker

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self.trial(trial)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt as e:  # SIGTERM / SIGINT: FAIL now, run again by the next sweep (resume.py)
            trial.set_user_attr("interrupted", str(e) or "SIGINT")
            raise
        except Exception as e:  # a broken point: FAIL, never retried
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:500])
            raise

    def trial(self, trial: optuna.Trial) -> float:
        from gradft.run import run  # torch and the models: only when a trial runs
        from gradft.train import NonFiniteError

        trial.set_user_attr("guidance_version", GUIDANCE_VERSION)  # check_guidance_version reads it on resume

        self.lock.release()  # the trial exists (RUNNING): other workers now count it
        spec = self.spec
        trial.study.sampler = make_sampler(spec, derive_seed(spec.seed, trial.number))
        fixed = control_overrides(trial, spec.space)  # a control point's values outside the space (λ = 0)
        params = {k: _suggest(trial, k, d) for k, d in spec.space.items() if k not in fixed}
        overrides = ["eval.splits=[select]", "save.model=false", f"logger.group={spec.study_name}", *spec.base,
                     *self.extra, *(f"{k}={_fmt(v)}" for k, v in {**params, **fixed}.items())]
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("worker", self.worker)
        accs: dict[str, float] = {}
        offset = 0  # intermediate values of run i are reported at steps offset+1.. (same order in every trial)
        for task, seed, data_seed in task_seeds(spec.tasks, range(spec.n_seeds), spec.data_seed):
            out = Path(spec.out_dir) / spec.study_name / f"trial_{trial.number}" / task / f"s{seed}"
            cfg = compose_run([*overrides, f"task={task}", f"seed={seed}", f"data_seed={data_seed}",
                               f"paths.output_dir={out}"])

            def report(step: int, acc: float, base: int = offset) -> None:
                trial.report(acc, base + step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"select accuracy {acc:.4f} at step {base + step}")

            steps_report = report if spec.prune_on == "steps" else None
            try:  # a run of this config and seeds finished in an interrupted trial: taken, not run again
                res = earlier_run(Path(spec.out_dir) / spec.study_name, out, cfg, task, seed, data_seed,
                                  steps_report) or run(cfg, out, steps_report)
            except NonFiniteError as e:  # a point where training diverges is a bad point, not a broken trial:
                trial.set_user_attr("diverged", f"{task}/s{seed}: {e}")  # it counts in the budget, and the
                log.warning("trial %d diverged on %s seed %d: pruned (%s)", trial.number, task, seed, e)
                raise optuna.TrialPruned(f"diverged on {task} seed {seed}") from None  # sampler learns it
            offset += int(res["steps"])
            acc = (res.get("select_metrics") or {}).get("accuracy")
            accs[f"{task}/s{seed}"] = float("nan") if acc is None else float(acc)
            trial.set_user_attr("select_accuracy_runs", accs)
            if spec.prune_on == "runs":  # the running mean after run i, at step i: every trial runs the same order
                running = statistics.fmean(accs.values())
                trial.report(running, len(accs))
                if math.isfinite(running) and trial.should_prune():
                    raise optuna.TrialPruned(f"mean select accuracy {running:.4f} after {len(accs)} runs")
        values = list(accs.values())
        trial.set_user_attr("select_accuracy_std", statistics.stdev(values) if len(values) > 1 else 0.0)
        for key, value in objective_stats(accs).items():  # per task, per seed, the objective's standard error
            trial.set_user_attr(key, value)
        return statistics.fmean(values) if all(map(math.isfinite, values)) else float("nan")  # NaN: Optuna fails it


def work(spec: Spec, extra: list[str], worker: int = 0, n_workers: int = 1) -> int:
    """One worker: run trials until the budget is met; 0 on success, 1 when max_failures is reached."""
    if n_workers > 1:
        set_worker_threads(n_workers)
    storage = make_storage(spec)
    study = optuna.load_study(study_name=spec.study_name, storage=storage, pruner=make_pruner(spec),
                              sampler=make_sampler(spec, derive_seed(spec.seed, 2**31 + worker)))
    lock = BudgetLock(Path(spec.out_dir) / f".{spec.study_name}.budget.lock")
    objective = Objective(spec, extra, lock, f"{socket.gethostname()}:{os.getpid()}:w{worker}")
    waited_for: set[int] = set()
    optuna.storages.fail_stale_trials(study)
    earlier = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    if earlier and worker == 0:  # a spec fixed after failures: they stay in the study, listed, and block nothing
        log.info("%d failed trial(s) of earlier runs (%s) stay in the study; they use no budget and do not count "
                 "toward max_failures=%d", len(earlier), ", ".join(f"#{n}" for n in sorted(earlier)),
                 spec.max_failures)
    while True:
        stopping.check()  # never start a trial after a SIGTERM (its exception may have been swallowed)
        lock.acquire()
        try:
            optuna.storages.fail_stale_trials(study)  # RUNNING trials of killed workers (no heartbeat) -> FAIL
            trials = study.get_trials(deepcopy=False)
            states = [t.state for t in trials]
            done = sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states)
            if budget_met(study, spec):
                return 0
            failed = sum(t.state == TrialState.FAIL and t.number not in earlier for t in trials)
            if failed >= spec.max_failures:
                log.error("%d failed trials in this run (max_failures=%d): stopping", failed, spec.max_failures)
                return 1
            if done + states.count(TrialState.RUNNING) >= spec.n_trials:
                running = {t.number for t in trials if t.state == TrialState.RUNNING}
                if running != waited_for:  # said once per change, not every WAIT_S
                    log.info("the last trial(s) %s are running (another worker, or a killed one): waiting; a trial "
                             "whose heartbeat stops is failed after grace_period=%ss and run again here",
                             ", ".join(f"#{n}" for n in sorted(running)), (spec.heartbeat or {}).get("grace_period"))
                    waited_for = running
                lock.release()  # the last trials are running elsewhere: wait in case one fails
                time.sleep(WAIT_S)
                continue
            study.optimize(objective, n_trials=1, catch=(Exception,))
        finally:
            lock.release()


def _worker_main(spec_dict: dict[str, Any], extra: list[str], worker: int, n_workers: int) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [sweep w{worker}] %(levelname)s %(message)s")
    try:
        with sigterm_interrupts():  # the parent passes SIGTERM on: the running trial is failed, not left RUNNING
            code = work(Spec(**spec_dict), extra, worker, n_workers)
    except KeyboardInterrupt as e:
        log.warning("worker %d stopped (%s); its running trial was marked FAIL", worker, e)
        code = getattr(e, "exit_code", 130)
    sys.exit(code)


def experiment_override(name: str) -> str:
    """``experiment=name`` while config.yaml lists ``experiment: null`` in its defaults, else ``+experiment=name``."""
    defaults = OmegaConf.load(CONF_DIR / "config.yaml").get("defaults", [])
    listed = any(OmegaConf.is_dict(d) and "experiment" in d for d in defaults)
    return f"{'' if listed else '+'}experiment={name}"


def write_best(study: optuna.Study, spec: Spec, extra: list[str], conf_dir: Path = CONF_DIR) -> Path | None:
    """The best trial's base overrides + params as ``<conf_dir>/experiment/best_<name>.yaml`` (``# @package
    _global_``): config-group choices go to its defaults list, every other key to its body. ``hydra.*`` overrides
    (a user's ``hydra.searchpath``) say where configs are, not what a run computes: they stay on the command line
    (an experiment file may not set them), and the header's command names ``--config-dir`` for a user's conf dir."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    overrides = [*spec.base, *extra, *(f"{k}={_fmt(v)}" for k, v in trial_values(best, spec.space).items())]
    defaults, body = [], OmegaConf.create({})
    for ov in OverridesParser.create().parse_overrides(overrides):
        key, value = ov.key_or_group, ov.value()
        if ov.is_delete() or key.split(".")[0] == "hydra":
            continue
        if "." not in key and (CONF_DIR / key).is_dir():
            defaults.append({f"override /{key}": value})
        else:
            OmegaConf.update(body, key, value, force_add=True)
    doc = OmegaConf.create({"defaults": defaults, **OmegaConf.to_container(body)} if defaults else body)
    std = best.user_attrs.get("select_accuracy_std", float("nan"))
    path = conf_dir / "experiment" / f"best_{spec.study_name}.yaml"
    where = "" if Path(conf_dir).resolve() == CONF_DIR.resolve() else f"--config-dir {Path(conf_dir).resolve()} "
    header = (f"# @package _global_\n# Best of sweep {spec.study_name}: trial {best.number}, mean selection-split "
              f"accuracy (each task's `select` split, never its reported one) {best.value:.4f} ± {std:.4f} over "
              f"tasks {spec.tasks} × {spec.n_seeds} seed(s).\n"
              f"# Written by gradft.experiments.sweep on {datetime.now():%Y-%m-%d %H:%M}. Run it with:\n"
              f"# python -m gradft {where}{experiment_override(path.stem)} task={spec.tasks[0]}\n")
    atomic_write(path, header + OmegaConf.to_yaml(doc))
    return path


def summary(study: optuna.Study, spec: Spec, best_path: Path | None) -> str:
    trials = study.get_trials(deepcopy=False)
    counts = {s.name: sum(t.state == s for t in trials) for s in TrialState if any(t.state == s for t in trials)}
    lines = [f"sweep {spec.study_name}: {len(trials)} trials {counts}; budget {spec.n_trials} (COMPLETE+PRUNED)"]
    ranked = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    for t in ranked[:10]:
        p = " ".join(f"{k}={_fmt(v)}" for k, v in trial_values(t, spec.space).items())
        se = t.user_attrs.get("select_accuracy_se")
        lines.append(f"  #{t.number:<4d} {t.value:.4f} ± {t.user_attrs.get('select_accuracy_std', 0):.4f}"
                     f"{f' (SE {se:.4f})' if se is not None else ''}{' control' * ('control' in t.user_attrs)}  {p}")
    if best_path:
        lines.append(f"best: trial {ranked[0].number} -> {best_path} "
                     f"(python -m gradft {experiment_override(best_path.stem)})")
    else:
        lines.append("no COMPLETE trial: no best-params file written")
    return "\n".join(lines)


def enqueue(study: optuna.Study, points: list[dict[str, Any]]) -> None:
    """Each reference point once: again if every trial that had it FAILed (a killed worker's), else skipped."""
    trials = study.get_trials(deepcopy=False)
    for params in points:
        same = [t for t in trials if all(t.params.get(k, t.system_attrs.get("fixed_params", {}).get(k)) == v
                                         for k, v in params.items())]
        if same and all(t.state == TrialState.FAIL for t in same):
            log.info("re-enqueueing reference point %s: its trial%s %s failed", params, "s" * (len(same) > 1),
                     ", ".join(f"#{t.number}" for t in same))
            study.enqueue_trial(params, skip_if_exists=False)
        elif not same:
            study.enqueue_trial(params)


def run_study(spec: Spec, extra: list[str], workers: int) -> int:
    """``workers`` workers on the study (this process when 1); 0 when they met the budget."""
    if workers <= 1:
        with sigterm_interrupts():
            return work(spec, extra)
    codes = run_workers(_worker_main, [(asdict(spec), extra, i, workers) for i in range(workers)],
                        [f"sweep-w{i}" for i in range(workers)])
    for i, c in enumerate(codes):
        if c:
            log.error("worker %d exited with code %s (its log lines above say why)", i, c)
    return int(any(codes))


def check_guidance_version(study: optuna.Study, spec: Spec) -> None:
    """A guided study whose finished trials do not carry this guidance version (none recorded: version 1, before the
    fix of issue 27) is refused, so its trials are never counted as current. Torch-free: composes the config only."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        if compose("config", overrides=[*spec.base, "paths.output_dir=."]).guidance.name == "none":
            return
    old = {t.user_attrs.get("guidance_version", 1) for t in study.get_trials(deepcopy=False)
           if t.state in (TrialState.COMPLETE, TrialState.PRUNED)} - {GUIDANCE_VERSION}
    if old:
        raise SystemExit(f"study {spec.study_name} holds trials of guidance version {min(old)}, superseded by "
                         f"version {GUIDANCE_VERSION} (results/README.md): give the spec a new study_name")


def sweep(spec: Spec, extra: list[str] = (), workers: int = 1, conf_dir: Path = CONF_DIR) -> int:
    """Create (or load) the study once, run ``workers`` workers on it, write the best params, print the summary."""
    extra = list(extra)
    check_space(spec, extra, compose=False)  # a typo or an empty space: one line, before the study exists
    study = optuna.create_study(study_name=spec.study_name, storage=make_storage(spec), direction="maximize",
                                load_if_exists=True, sampler=make_sampler(spec, spec.seed), pruner=make_pruner(spec))
    check_guidance_version(study, spec)
    kept = {k: v for k, v in asdict(spec).items() if k not in ("n_trials", "storage", "out_dir")}  # no password
    if not kept.get("controls"):
        kept.pop("controls", None)  # as studies created before `controls:` existed recorded their spec
    if study.user_attrs.get("spec") not in (None, kept):
        log.warning("the spec differs from the one this study was created with (see its user attr `spec`)")
    study.set_user_attr("spec", kept)
    if not budget_met(study, spec):  # first: a retried reference point is not enqueued twice; a finished study
        retry_interrupted(study)     # is left as it is
    enqueue(study, spec.enqueue)
    enqueue_controls(study, spec.controls, spec.space)  # λ = 0 points: "no guidance" can win
    if budget_met(study, spec):  # nothing to run: no worker is started (and nothing heavy imported)
        log.info("budget met: %d trials COMPLETE or PRUNED of n_trials=%d; nothing to run (raise --n-trials for "
                 "more)", sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials()),
                 spec.n_trials)
        code = 0
    else:
        check_space(spec, extra)  # a bad value of a searched name: one line before the first trial (imports torch)
        code = run_study(spec, extra, workers)
    best_path = write_best(study, spec, extra, conf_dir)
    print(summary(study, spec, best_path))
    return int(code)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gradft.experiments.sweep", description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", help="a sweep yaml, e.g. sweeps/ours_rte.yaml")
    ap.add_argument("overrides", nargs="*", help="extra run overrides, appended to the spec's base")
    ap.add_argument("--n-trials", type=int, help="TOTAL budget (overrides the spec's n_trials)")
    ap.add_argument("--workers", type=int, default=1, help="worker processes on the same storage")
    ap.add_argument("--storage", help="any SQLAlchemy URL (default sqlite:///outputs/sweeps/<name>.db)")
    ap.add_argument("--study-name")
    ap.add_argument("--out", dest="out_dir", help="root of the trials' run folders (default outputs/sweeps)")
    ap.add_argument("--conf-dir", type=Path, default=CONF_DIR, help="where experiment/best_<name>.yaml goes")
    ap.add_argument("--dashboard", action="store_true", help="serve the study in optuna-dashboard")
    args = ap.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [sweep] %(levelname)s %(message)s")
    spec = load_spec(args.spec, n_trials=args.n_trials, storage=args.storage, study_name=args.study_name,
                     out_dir=args.out_dir)
    if args.dashboard:
        if spec.storage.startswith("sqlite:///") and not Path(spec.storage[len("sqlite:///"):]).exists():
            raise SystemExit(f"no study yet at {mask(spec.storage)}: run `make sweep SWEEP={Path(args.spec).stem}` "
                             "first")
        exe = Path(sys.executable).with_name("optuna-dashboard")
        cmd = [str(exe) if exe.exists() else "optuna-dashboard", spec.storage]
        print("$", *cmd[:-1], mask(cmd[-1]), flush=True)
        os.execvp(cmd[0], cmd)
    try:
        return sweep(spec, args.overrides, args.workers, args.conf_dir)
    except ValueError as e:  # a bad spec or storage: one line, exit 2
        print(f"gradft.experiments.sweep: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # SIGINT, or SIGTERM with one worker: the running trial is FAIL
        log.warning("sweep stopped (%s); finished trials are kept, rerun the command to resume", e or "SIGINT")
        return getattr(e, "exit_code", 130)


if __name__ == "__main__":
    sys.exit(main())

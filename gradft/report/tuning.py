"""Whether a tuning study could select (issue 28, item 2), as the report prints it.

Owns ``noise_lines`` (the report's tuning-noise block: per study the best trial's objective standard error, best −
default and best − runner-up with their paired bootstrap 95 % CIs, the λ = 0 controls) and ``fill_selection``
(that block's data for a grid file written before it, computed from the study itself: the spec's storage, else the
committed copy ``results/tuning/*/<study>.db``, when it can be found) and ``status`` (``python -m
gradft.report.tuning sweeps/signal_minilm_*.yaml``: each study's trials against its budget, the runs and
worker-hours it still needs (``left``: timed by its finished runs on this machine) and that block so far, a running
study's included; ``make signal-status``). The data is
``gradft.experiments.signal.selection_summary``'s, which ``gradft.experiments.tuned`` writes into the grid file's
``tuning`` node, so the report needs no study database.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from statistics import fmean
from typing import Any

import optuna

from gradft.experiments.signal import selection_summary
from gradft.experiments.sweep_spec import load_spec
from gradft.tracking import cpu_name, ran_on

log = logging.getLogger("gradft.report.build")


def _diff(d: dict[str, Any] | None, what: str) -> str:
    if not d:
        return f"no {what} trial"
    ci = (f" [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]" if d.get("ci_low") is not None
          else " (no CI: fewer than 2 cells)" if d.get("paired")
          else " (no CI: per-(task, seed) accuracies not stored)")
    return f"{100 * d['diff']:+.2f}{ci} vs #{d['trial']}"


def noise_lines(tuning: dict[str, Any] | None) -> list[str]:
    """Per study: the objective's SE, best − default and best − runner-up with their CIs, the λ = 0 controls."""
    studies = {m: s for m, s in (tuning or {}).items() if isinstance(s, dict) and "best" in s}
    if not studies:
        return []
    rows = ["### Can the tuning tell its trials apart?", "",
            "Objective: mean selection accuracy over the study's (task, seed) runs; SE: the sample std of those runs "
            "/ √n (of the best trial). Differences in accuracy points with a paired bootstrap 95 % CI over the (task, "
            "seed) cells both trials ran (per-cell accuracies: trial user attr `select_accuracy_runs`). Default: the "
            "study's first enqueued point (the config's defaults). λ = 0 controls: trials of the spec's `controls` "
            "(user attr `control`), marked †.", "",
            "| Method | best trial | objective SE (pts) | best − default | best − runner-up | λ = 0 controls |",
            "|---|---|---|---|---|---|"]
    for m, s in studies.items():
        sel = s.get("selection")
        if not sel:
            rows.append(f"| {m} | #{s.get('best_trial', '?')} | not recorded | not recorded | not recorded | "
                        "not recorded (grid file written before the tuning-noise block: "
                        "rerun `gradft.experiments.tuned`) |")
            continue
        se = (f"{100 * sel['se']:.2f}" if sel.get("se") is not None else "not recorded"
              + (f" ({100 * sel['se_from_runs']:.2f} from its runs)" if sel.get("se_from_runs") is not None else ""))
        default = "best is the default" if sel.get("default_is_best") else _diff(sel.get("minus_default"), "default")
        controls = ", ".join(f"#{c['trial']} {100 * c['value']:.1f} ("
                             + ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                                         for k, v in c["control"].items()) + ")"
                             for c in sel.get("controls", [])) or "none"
        rows.append(f"| {m} | #{sel['best_trial']}{' †' * bool(sel.get('best_is_control'))} | {se} | {default} | "
                    f"{_diff(sel.get('minus_runner_up'), 'runner-up')} | {controls} |")
    return [*rows, ""]


def _storages(s: dict[str, Any]) -> list[str]:
    """Where a study of the tuning node may be: its spec's storage, then the committed copies of the studies."""
    out = []
    try:
        out.append(load_spec(s["spec"]).storage)
    except Exception as e:  # noqa: BLE001 — a moved or unreadable spec: try the committed copies
        log.info("tuning block: spec %s unreadable (%s)", s.get("spec"), e)
    out += [f"sqlite:///{p}" for p in sorted(Path("results/tuning").glob(f"*/{s.get('study')}.db"))]
    return [u for u in out if not u.startswith("sqlite:///") or Path(u.removeprefix("sqlite:///")).is_file()]


def fill_selection(tuning: dict[str, Any]) -> dict[str, Any]:
    """The tuning node with ``selection`` computed from each study it lacks it for (a grid file from before),
    where the study is found; the others stay without it (printed as "not recorded")."""
    out = dict(tuning)
    for m, s in tuning.items():
        if not isinstance(s, dict) or "best" not in s or s.get("selection") or not s.get("study"):
            continue
        for url in _storages(s):
            try:
                study = optuna.load_study(study_name=s["study"], storage=url)
            except Exception as e:  # noqa: BLE001 — not this storage: try the next
                log.info("tuning block: no study %s in %s (%s)", s["study"], url, e)
                continue
            enqueue = []
            try:
                enqueue = load_spec(s["spec"]).enqueue
            except Exception:  # noqa: BLE001 — no spec: no default point to compare with
                pass
            out[m] = {**s, "selection": selection_summary(study.get_trials(deepcopy=False), enqueue),
                      "selection_from": url}
            break
    return out


def _trials(spec: Any) -> list[Any] | None:
    """The study's trials, or None when it has not started: a missing SQLite file is never created by looking."""
    url = spec.storage or ""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return None
    try:
        return optuna.load_study(study_name=spec.study_name, storage=url).get_trials(deepcopy=False)
    except (KeyError, ValueError):  # no such study in that storage yet
        return None


def _studies(specs: list[str | Path]) -> list[tuple[Any, list[Any] | None, dict[str, Any]]]:
    """(spec, its trials or None when not started, its selection summary) per spec."""
    out = []
    for path in specs:
        spec = load_spec(path)
        trials = _trials(spec)
        out.append((spec, trials, selection_summary(trials, spec.enqueue) if trials else {}))
    return out


def _best(trials: list[Any], sel: dict[str, Any]) -> str:
    return f"{100 * next(t.value for t in trials if t.number == sel['best_trial']):.1f} (#{sel['best_trial']})"


def _runs(folder: Path) -> dict[str, dict[str, Any]]:
    """``<task>/s<seed>`` -> results.json of each finished run in a trial's folder."""
    out = {}
    for f in folder.glob("*/s*/results.json"):
        try:
            out[f"{f.parent.parent.name}/{f.parent.name}"] = json.loads(f.read_text())
        except (OSError, ValueError):  # a file cut by a crash: not a finished run
            continue
    return out


def left(spec: Any, trials: list[Any] | None) -> tuple[int, list[dict[str, Any]]]:
    """The runs a study still needs to reach its budget, and its finished runs (to time them). Each trial left costs
    tasks × seeds runs, less the finished runs an unfinished trial holds: a running or waiting trial, or an
    interrupted one that the next start re-enqueues (``resume.retry_interrupted``) and whose runs it reuses."""
    per_trial = len(spec.tasks) * spec.n_seeds
    trials = trials or []
    home = Path(spec.out_dir) / spec.study_name
    done = sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    pending = [t for t in trials if t.state.name in ("RUNNING", "WAITING") or (
        t.state.name == "FAIL" and "error" not in t.user_attrs and t.number not in retried and t.params)]
    held = []
    for t in pending:  # a retry's runs: its own folder's and those it will reuse from the trial it retries
        runs = _runs(home / f"trial_{t.number}")
        if t.user_attrs.get("retry_of") is not None:
            runs = {**_runs(home / f"trial_{t.user_attrs['retry_of']}"), **runs}
        held.append(min(len(runs), per_trial))
    slots = max(0, spec.n_trials - done)
    # a run a retry reused is a byte-identical copy in two trial folders (as compute.spent counts it): timed once
    finished = list({json.dumps(r, sort_keys=True): r for t in trials
                     for r in _runs(home / f"trial_{t.number}").values()}.values())
    return max(0, slots * per_trial - sum(sorted(held, reverse=True)[:slots])), finished


def _hours_left(runs_left: int, finished: list[dict[str, Any]], pooled: list[dict[str, Any]],
                here: str) -> tuple[float | None, str]:
    """runs left × the mean wall time of the first of: the study's runs on this machine's hardware, every listed
    study's runs here (the hardware moves a run's time more than the method: SmolLM2's bf16 runs took 2× as long on
    an AMD EPYC as on a Xeon), the study's runs elsewhere, every study's elsewhere; with what the mean rests on when
    it is not the first, (None, '') when nothing was timed."""
    for pool, on_here, mark in ((finished, True, ""), (pooled, True, "pooled"), (finished, False, "other hardware"),
                                (pooled, False, "pooled, other hardware")):
        times = [float(r["wall_time_s"]) for r in pool if "wall_time_s" in r and (ran_on(r) == here) == on_here]
        if times:
            return runs_left * fmean(times) / 3600, mark
    return None, ""


def status(specs: list[str | Path], workers: int = 2) -> str:
    """Each study's trials against its budget (a running study's too), the runs and worker-hours it still needs,
    and the tuning-noise block of its finished trials: how far the tuning is, how long the rest will take, and
    whether what it has found so far is told apart from noise."""
    rows = ["| study | budget | complete | pruned | failed | running | best objective so far (trial) | runs left | "
            "≈ worker-h left |", "|---|---|---|---|---|---|---|---|---|"]
    blocks: dict[str, Any] = {}
    studies = [(spec, trials, sel, *left(spec, trials)) for spec, trials, sel in _studies(specs)]
    pooled = [r for *_, finished in studies for r in finished]
    here, total_runs, total_h = cpu_name(), 0, 0.0
    for spec, trials, sel, runs_left, finished in studies:
        h, mark = _hours_left(runs_left, finished, pooled, here)
        hours = "—" if h is None else f"{h:.1f}" + (f" ({mark})" if mark and runs_left else "")
        total_runs, total_h = total_runs + runs_left, total_h + (h or 0.0)
        if trials is None:
            rows.append(f"| {spec.study_name} | {spec.n_trials} | not started | | | | | {runs_left} | {hours} |")
            continue
        n = Counter(t.state.name for t in trials)
        rows.append(f"| {spec.study_name} | {spec.n_trials} | {n['COMPLETE']} | {n['PRUNED']} | {n['FAIL']} | "
                    f"{n['RUNNING'] + n['WAITING']} | {_best(trials, sel) if sel else '—'} | {runs_left} | {hours} |")
        if sel:
            blocks[spec.study_name] = {"best": {}, "selection": sel}
    rows += ["", f"Left: {total_runs} runs, ≈ {total_h:.1f} worker-hours ≈ {total_h / workers:.1f} hours of this "
             f"machine at {workers} workers ({here}). Worker-hours left: runs left × the mean `wall_time_s` of the "
             "study's finished runs on this hardware (else of every listed study's here, marked pooled; else of "
             "runs on other hardware, marked). Runs left: each trial short of the budget costs tasks × seeds runs, "
             "less the finished runs that an unfinished trial holds and its retry reuses."]
    return "\n".join([*rows, "", *noise_lines(blocks)])


def brief(specs: list[str | Path]) -> str:
    """The README's table: per study (named by its method) the trials done (COMPLETE + PRUNED) of its budget, the
    best objective so far with its SE, and best − default / best − runner-up as the noise block prints them."""
    rows = ["| method | trials done / budget | best so far % (trial) | its SE | best − default [95 % CI] | "
            "best − runner-up |", "|---|---|---|---|---|---|"]
    for spec, trials, sel in _studies(specs):
        method = next((b.split("=", 1)[1] for b in spec.base if b.startswith("method=")), spec.study_name)
        done = "not started" if trials is None else sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
        if not sel:
            rows.append(f"| {method} | {done} / {spec.n_trials} | | | | |")
            continue
        default = "(the default)" if sel.get("default_is_best") else _diff(sel.get("minus_default"), "default")
        se = "—" if sel.get("se") is None else f"{100 * sel['se']:.1f}"
        rows.append(f"| {method} | {done} / {spec.n_trials} | {_best(trials, sel)} | {se} | {default} | "
                    f"{_diff(sel.get('minus_runner_up'), 'runner-up')} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gradft.report.tuning",
                                 description="Where each tuning study stands, and whether it can select so far.")
    ap.add_argument("specs", nargs="+", help="sweep yamls, e.g. sweeps/signal_minilm_*.yaml")
    ap.add_argument("--brief", action="store_true", help="one row per study: the README's table")
    ap.add_argument("--workers", type=int, default=2, help="runs side by side, for the machine-hours left (2)")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(brief(args.specs) if args.brief else status(args.specs, args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())

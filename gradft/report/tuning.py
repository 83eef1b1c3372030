"""Whether a tuning study could select (issue 28, item 2): its objective's noise against the differences it decided.

Owns ``selection_summary`` (called by ``gradft.experiments.tuned.study_summary``, so that it is written into the grid
file's
``tuning`` node and the report needs no study database): per study the best trial's objective standard error (user
attr ``select_accuracy_se`` of ``gradft.experiments.signal``; None in studies from before it), best − default (the
spec's
first ``enqueue`` point: the config's defaults) and best − runner-up (the second-best COMPLETE trial), each with a
paired bootstrap 95 % CI over the (task, seed) cells both trials ran when their per-cell selection accuracies are
stored (user attr ``select_accuracy_runs``: ``{"task/s<seed>": acc}``), else the bare difference and a note; and
the λ = 0 control trials (user attr ``control``). ``noise_lines`` prints that as the report's tuning-noise block;
``fill_selection`` computes it for a grid file written before it from the study itself (the spec's storage, else the
committed copy ``results/tuning/*/<study>.db``), when it can be found.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from gradft.experiments.signal import objective_stats
from gradft.experiments.sweep_spec import load_spec
from gradft.report.stats import paired_comparison

log = logging.getLogger("gradft.report.build")
RUNS = "select_accuracy_runs"  # gradft.experiments.sweep: a trial's selection accuracy per (task, seed) run
SE = "select_accuracy_se"  # gradft.experiments.signal.objective_stats: the objective's standard error


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def difference(a: Any, b: Any) -> dict[str, Any]:
    """a − b of two trials' objectives: paired over their shared (task, seed) cells when both stored them."""
    ra, rb = a.user_attrs.get(RUNS), b.user_attrs.get(RUNS)
    out: dict[str, Any] = {"trial": b.number, "diff": a.value - b.value, "ci_low": None, "ci_high": None,
                           "n_pairs": 0, "paired": False}
    if isinstance(ra, dict) and isinstance(rb, dict) and set(ra) & set(rb):
        c = paired_comparison(ra, rb)
        out.update(diff=c["mean_diff"], ci_low=_finite(c["ci_low"]), ci_high=_finite(c["ci_high"]),
                   n_pairs=c["n_pairs"], paired=True)
    return out


def _is_default(t: Any, point: dict[str, Any]) -> bool:
    return all(t.params.get(k) == v or (isinstance(v, float) and isinstance(t.params.get(k), float)
                                        and math.isclose(t.params[k], v)) for k, v in point.items())


def selection_summary(trials: list[Any], enqueue: list[dict[str, Any]]) -> dict[str, Any]:
    """The noise block of one study (plain data: it goes into the grid file's yaml)."""
    from optuna.trial import TrialState

    done = sorted([t for t in trials if t.state == TrialState.COMPLETE and _finite(t.value) is not None],
                  key=lambda t: (-t.value, t.number))
    if not done:
        return {}
    best = done[0]
    default = next((t for t in sorted(done, key=lambda t: t.number) if enqueue and _is_default(t, enqueue[0])
                    and "control" not in t.user_attrs), None)
    runs = best.user_attrs.get(RUNS)
    return {"best_trial": best.number, "se": _finite(best.user_attrs.get(SE)),
            "se_from_runs": _finite(objective_stats(runs)["select_accuracy_se"]) if isinstance(runs, dict) else None,
            "best_is_control": "control" in best.user_attrs, "cells_stored": isinstance(best.user_attrs.get(RUNS),
                                                                                        dict),
            "minus_default": difference(best, default) if default is not None and default is not best else None,
            "default_is_best": default is best,
            "minus_runner_up": difference(best, done[1]) if len(done) > 1 else None,
            "controls": [{"trial": t.number, "value": t.value, "control": dict(t.user_attrs["control"])}
                         for t in sorted(done, key=lambda t: t.number) if "control" in t.user_attrs]}


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
    import optuna

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

"""What every table shows beside accuracy, so that under-training and divergence are visible (issue 28, items 3, 4).

Owns:
- ``final_loss``: a run's final training loss — results.json ``final_train_loss`` (runs since early stopping), else
  the mean of the last epoch of ``history["train/loss"]`` (ceil(shots / batch_size) steps, batch_size from the
  run's config.yaml beside it, 8 without one).
- ``score_diverged``: a diverged run (``error.json`` with ``diverged``, no results.json) becomes a record scored as
  what its user would get — the train-pool majority prediction's accuracy on the eval split, read from the
  ``metrics`` baselines of another method's results.json in the same (task, seed) cell — flagged ``diverged``, so
  that it stays in every mean and paired test. A run with no such neighbour stays unscored (named, not averaged).
- the per-method outcome columns: final loss (mean ± std over its runs), divergence rate (diverged cells / planned
  cells) and unstable runs (guided runs whose ``guidance_stats.warnings`` is non-empty), and the line naming the
  diverged cells under a table.
Imports no other report module (they import this one).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

BATCH_SIZE = 8  # conf/trainer/default.yaml: the batch size of a run whose config.yaml does not say
MAJORITY = "baseline_train_majority"  # gradft.metrics.baselines: the constant a user knows without eval labels


def _finite(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else math.nan


def batch_size(r: dict[str, Any]) -> int:
    """trainer.batch_size of the run's config.yaml (beside its results.json), else ``BATCH_SIZE``."""
    try:
        cfg = yaml.safe_load((Path(r["_path"]).parent / "config.yaml").read_text())
        return int(cfg["trainer"]["batch_size"])
    except (KeyError, TypeError, ValueError, OSError, yaml.YAMLError):
        return BATCH_SIZE


def final_loss(r: dict[str, Any]) -> float:
    """The run's final training loss (NaN: a diverged or zero-shot run, or one that recorded no loss)."""
    if r.get("diverged"):
        return math.nan
    if math.isfinite(v := _finite(r.get("final_train_loss"))):
        return v
    hist = [_finite(x) for x in (r.get("history") or {}).get("train/loss") or []]
    if not hist or not r.get("shots"):
        return math.nan
    window = [x for x in hist[-math.ceil(r["shots"] / batch_size(r)):] if math.isfinite(x)]
    return float(np.mean(window)) if window else math.nan


def unstable(r: dict[str, Any]) -> bool:
    """A guided run whose guidance health check warned (``guidance_stats.warnings``)."""
    return bool((r.get("guidance_stats") or {}).get("warnings"))


def cell_name(r: dict[str, Any]) -> str:
    return f"{r['task']}/{r['method']}/k{r['shots']}/s{r['seed']}"


def _donor(d: dict[str, Any], recs: list[dict]) -> dict[str, Any] | None:
    """The results.json of the same (task, seed) cell nearest the diverged run's folder (same model and shots
    first), with a finite train-pool majority accuracy."""
    cands = [r for r in recs if (r["task"], r["seed"]) == (d["task"], d["seed"]) and not r.get("diverged")
             and math.isfinite(_finite(r["metrics"].get(MAJORITY)))]

    def near(r: dict[str, Any]) -> tuple:
        common = len(os.path.commonpath([os.path.abspath(r.get("_path", "/")), os.path.abspath(d["where"])]))
        return (r["model"] != d["model"] and d["model"] != "?", r["shots"] != d["shots"], -common)

    return min(cands, key=near, default=None)


def score_diverged(runs: list[dict[str, Any]], recs: list[dict]) -> tuple[list[dict], list[dict]]:
    """(records of the diverged runs scored as the train-pool majority, the runs that cannot be scored)."""
    scored, unscored = [], []
    for d in runs:
        donor = _donor(d, recs) if d.get("seed") is not None and d.get("shots") is not None else None
        if donor is None:
            unscored.append(d)
            continue
        m = donor["metrics"]
        metrics = {k: v for k, v in m.items() if k.startswith("baseline_")}
        metrics["accuracy"] = m[MAJORITY]
        if "f1_macro" in m:  # the constant prediction's macro-F1, where its neighbours report one
            metrics["f1_macro"] = m.get(f"{MAJORITY}_f1_macro")
        method = d["method"]
        if donor.get("head") == "lm" and not method.endswith("-lm") and method not in ("zero-shot", "icl"):
            method += "-lm"  # a grid's LM-head cell, named as gradft.report.build.collect names its results
        scored.append({"model": donor["model"] if d["model"] == "?" else d["model"], "method": method,
                       "task": d["task"], "shots": d["shots"], "seed": d["seed"], "data_seed": donor["data_seed"],
                       "head": donor.get("head"), "config_key": "", "metrics": metrics, "diverged": True,
                       "eval_examples": donor.get("eval_examples"), "data": donor.get("data"),
                       "env": donor.get("env"), "_path": str(Path(d["where"]) / "error.json"), "_mtime": 0.0})
    return scored, unscored


def scored_lines(recs: list[dict]) -> list[str]:
    """The diverged cells that are in the means, by name (one line, or none)."""
    cells = sorted(cell_name(r) for r in recs if r.get("diverged"))
    return [f"**Diverged, scored as the train-pool majority** ({len(cells)} cell{'s' * (len(cells) > 1)}: "
            "non-finite losses beyond trainer.max_skipped; each counts in the means and the paired tests with the "
            "accuracy of the train pool's majority class on its eval split, what its user would get): "
            f"{', '.join(cells)}."] if cells else []


def loss_stat(recs: list[dict]) -> tuple[float, float, int]:
    """Mean ± sample std of the runs' final training loss (the runs that have one)."""
    v = [x for x in map(final_loss, recs) if math.isfinite(x)]
    if not v:
        return math.nan, math.nan, 0
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else math.nan, len(v)


def fmt_loss(recs: list[dict]) -> str:
    mu, sd, n = loss_stat(recs)
    if not n:
        return "—"
    return f"{mu:.3f}" + (f" ± {sd:.3f}" if n > 1 else " (n=1)")


def fmt_rate(k: int, n: int) -> str:
    return f"{k}/{n} ({100 * k / n:.0f} %)" if n else "—"


def outcome_cells(recs: list[dict], planned: int) -> list[str]:
    """A method's markdown cells: final loss, divergence rate (diverged / planned cells), unstable guided runs."""
    guided = [r for r in recs if "guidance_stats" in r]
    return [fmt_loss(recs), fmt_rate(sum(bool(r.get("diverged")) for r in recs), planned),
            fmt_rate(sum(map(unstable, guided)), len(guided)) if guided else "—"]


def n_results(recs: list[dict]) -> int:
    """How many of ``recs`` are results.json files (not diverged runs scored as the majority)."""
    return sum(not r.get("diverged") for r in recs)


def rate_lines(recs: list[dict], unscored: list[dict]) -> list[str]:
    """Per (model, method): diverged cells / planned cells — every (task, seed) any method of that model ended (a
    result or a divergence) at each of this method's shot counts — and the unstable guided runs."""
    ended = recs + unscored
    rows = []
    for mo, me in sorted({(r["model"], r["method"]) for r in ended}):
        mine = [r for r in ended if (r["model"], r["method"]) == (mo, me)]
        cells = {(r["task"], r["seed"]) for r in ended if r["model"] == mo}
        planned = len(cells) * len({r["shots"] for r in mine})
        diverged = sum(bool(r.get("diverged")) or "metrics" not in r for r in mine)  # scored, or no result
        guided = [r for r in mine if "guidance_stats" in r]
        rows.append(f"| {mo} | {me} | {fmt_rate(diverged, planned)} | "
                    f"{fmt_rate(sum(map(unstable, guided)), len(guided)) if guided else '—'} |")
    return ["", "Diverged: diverged runs / planned cells (each (task, seed) of the model at each of the method's k); "
            "unstable: guided runs whose guidance health check warned / guided runs.", "",
            "| model | method | diverged | unstable |", "|---|---|---|---|", *rows] if rows else []

"""The paper's Figure 3 from results.json files: few-shot accuracy on the domain (table) tasks.

Owns `figure3` (table tasks: ``gradft.report.table1.is_table_task``): ``figure3.png`` (accuracy per task, one bar
per method and model with ± std error bars over seeds, the train-pool majority marked as a line, chance dotted) and
``figure3.md`` (accuracy and macro-F1 per task and method, the three baselines beside each row, and a paired test of
ours vs lora over (task, seed) within each model and head).
A zero-shot run (k = 0) is a row and a bar of its own; a run that diverged (``error.json`` with ``diverged``, no
results.json: a grid cell's or a single run's) is a row saying so, never a silent hole. Called by
``gradft.report.build``;
draws every model found (the legend says which), trains nothing.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gradft.config.guidance import superseded_run  # noqa: E402
from gradft.report.outcomes import fmt_loss, n_results, rate_lines  # noqa: E402
from gradft.report.table1 import (  # noqa: E402
    as_number,
    diverged_lines,
    fmt,
    hardware_line,
    mean_std,
    method_order,
    paired,
    runaway_lines,
    tuning_lines,
)

DOMAIN = {"overruling": "legal", "unfair_tos": "legal (ToS)", "promise_nfr": "technical", "scicite": "science",
          "uk_manifesto": "policy"}  # none of the shipped sets is financial (docs/data.md); a user's task may be
GRID_CELL = re.compile(r"(?:^|/)([^/]+)/([^/]+)/k(\d+)/s(\d+)$")  # <task>/<method>/k<shots>/s<seed>: the grid's


def diverged_runs(root: Path | list[Path], model: str = "?") -> list[dict[str, Any]]:
    """Every ``error.json`` with ``diverged: true`` and no results.json beside it: task, method, model, shots, seed
    (a single run records them; a grid cell's come from its folder, ``model`` when it does not say)."""
    out = []
    for r in [Path(x) for x in root] if isinstance(root, list) else [Path(root)]:
        for path in sorted(r.rglob("error.json")):
            try:
                e = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if not (isinstance(e, dict) and e.get("diverged")) or (path.parent / "results.json").exists() \
                    or superseded_run(path.parent):  # a diverged guided run of an older guidance version
                continue
            cell = GRID_CELL.search(path.parent.as_posix())
            if "task" not in e and cell is None:
                continue
            task, method, shots, seed = (e["task"], e.get("method", "?"), e.get("shots"), e.get("seed")) \
                if "task" in e else (cell[1], cell[2], int(cell[3]), int(cell[4]))
            if method.endswith("-lm") and "task" not in e:  # the grid's folder name of an LM-head cell
                e["head"] = "lm"
            if e.get("head") == "lm" and method not in ("zero-shot",) and not method.endswith("-lm"):
                method = f"{method}-lm"
            out.append({"task": task, "method": method, "model": e.get("model", model), "shots": shots,
                        "seed": seed, "table_task": e.get("table_task"), "where": str(path.parent)})
    return out


def domain_sentence(tasks: list[str]) -> str:
    """Which of the paper's domains the shipped tasks stand for, and which tasks are the user's (their domain is
    theirs to say): never "no financial data here" above a user's financial task."""
    users = [t for t in tasks if t not in DOMAIN]
    shipped = "None of the shipped domain data sets is financial (docs/data.md)"
    return f"{shipped}; user tasks here: {', '.join(users)}. " if users else f"{shipped}. "


def _series(recs: list[dict]) -> list[tuple[str, str]]:
    """(model, method) pairs, models by name, methods in the report's order."""
    return [(mo, me) for mo in sorted({r["model"] for r in recs})
            for me in method_order([r for r in recs if r["model"] == mo])]


def _base(recs: list[dict], task: str, key: str) -> float:
    return mean_std([as_number(r["metrics"].get(key)) for r in recs if r["task"] == task])[0]


def figure3(recs: list[dict], out: Path, root: Path | list[Path], tuning: dict | None = None) -> list[Path]:
    """figure3.png + figure3.md of the domain-task results; ``tuning``: the grid's ``gradft.experiments.tuned`` node,
    whose
    values, ranges and budget go under the table."""
    models = sorted({r["model"] for r in recs})
    known = {r["task"] for r in recs}
    scored = {Path(r["_path"]).parent.resolve() for r in recs if r.get("diverged") and "_path" in r}  # in the means
    diverged = [d for d in diverged_runs(root, models[0] if len(models) == 1 else "?")  # a grid cell's: by its task
                if (d["table_task"] or (d["table_task"] is None and (d["task"] in known or d["task"] in DOMAIN)))
                and Path(d["where"]).resolve() not in scored]
    if not recs and not diverged:
        return []
    out.mkdir(parents=True, exist_ok=True)
    tasks = sorted({r["task"] for r in recs} | {d["task"] for d in diverged},
                   key=lambda t: (t not in DOMAIN, DOMAIN.get(t, ""), t))
    series = _series(recs)
    series += sorted({(d["model"], d["method"]) for d in diverged} - set(series))
    cell = {(mo, me, t): [r for r in recs if (r["model"], r["method"], r["task"]) == (mo, me, t)]
            for mo, me in series for t in tasks}
    stat = {k: mean_std([as_number(r["metrics"]["accuracy"]) for r in v]) for k, v in cell.items()}
    f1 = {k: mean_std([as_number(r["metrics"].get("f1_macro")) for r in v]) for k, v in cell.items()}

    fig, ax = plt.subplots(figsize=(max(7.0, 1.6 * len(tasks) + 2), 4.8))
    width = 0.8 / max(len(series), 1)
    for i, (mo, me) in enumerate(series):
        mu = np.array([stat[(mo, me, t)][0] for t in tasks]) * 100
        sd = np.nan_to_num(np.array([stat[(mo, me, t)][1] for t in tasks]) * 100)
        ax.bar(np.arange(len(tasks)) + (i - (len(series) - 1) / 2) * width, mu, width, yerr=sd, capsize=2,
               label=f"{me} ({mo})")
    for j, t in enumerate(tasks):
        lo, hi = j - 0.45, j + 0.45
        ax.hlines(_base(recs, t, "baseline_train_majority") * 100, lo, hi, colors="black", linewidth=1.5,
                  label="train-pool majority" if j == 0 else None)
        ax.hlines(_base(recs, t, "baseline_chance") * 100, lo, hi, colors="gray", linestyles=":",
                  label="chance (1/C)" if j == 0 else None)
    ax.set_xticks(range(len(tasks)), [f"{t}\n({DOMAIN.get(t, 'user task')})" for t in tasks], fontsize=8)
    ax.set_ylabel("accuracy (%) on the task's eval split")
    ax.set_ylim(bottom=0)
    shots = sorted({r["shots"] for r in recs} | {d["shots"] for d in diverged if d["shots"] is not None})
    seeds = sorted({r["seed"] for r in recs} | {d["seed"] for d in diverged if d["seed"] is not None})
    ax.set_title(f"Figure 3: domain tasks, k={'/'.join(map(str, shots))}, seeds {','.join(map(str, seeds))} "
                 "(bars: mean, error bars: ± std)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "figure3.png", dpi=130)
    plt.close(fig)

    n_eval = {t: sorted({r.get("eval_examples") for r in recs if r["task"] == t}) for t in tasks}
    where = " + ".join(map(str, root)) if isinstance(root, list) else root
    n_lost = len(diverged) + sum(bool(r.get("diverged")) for r in recs)  # unscored + scored as the majority
    lost = f" and {n_lost} diverged run(s) without one" if n_lost else ""
    lines = ["# Figure 3: few-shot accuracy on domain tasks", "",
             f"k = {'/'.join(map(str, shots))} shots, seeds {', '.join(map(str, seeds))}; mean ± std over seeds "
             f"(sample std). From {n_results(recs)} results.json{lost} under `{where}`. "
             "Accuracy and macro-F1 (%) on each task's seeded eval split; beside each row the three baselines: "
             "train-pool majority (the constant a user can know without eval labels; its macro-F1 in brackets), "
             "chance (1/C), and the eval split's own majority rate; k = 0 rows are zero-shot runs (no method "
             "applied). " + domain_sentence(tasks) + (hardware_line(recs) if recs else ""), *diverged_lines(root, recs),
             *runaway_lines(recs), "Final loss: each run's mean training loss over its last epoch, mean ± std over "
             "runs; a diverged run counts as the train-pool majority's accuracy (and its macro-F1), marked in its row.",
             "", "| task (domain) | eval n | model | method | accuracy | macro-F1 | final loss | train-pool majority | "
             "chance | eval majority |", "|---|---|---|---|---|---|---|---|---|---|"]
    for t in tasks:
        tr = [r for r in recs if r["task"] == t]
        base = (f"{_base(tr, t, 'baseline_train_majority') * 100:.1f} "
                f"({_base(tr, t, 'baseline_train_majority_f1_macro') * 100:.1f}) | "
                f"{_base(tr, t, 'baseline_chance') * 100:.1f} | {_base(tr, t, 'baseline_eval_majority') * 100:.1f}"
                ) if tr else "— | — | —"  # only diverged runs: no baselines were computed
        for mo, me in series:
            gone = [d for d in diverged if (d["model"], d["method"], d["task"]) == (mo, me, t)]
            n_div = sum(bool(r.get("diverged")) for r in cell[(mo, me, t)])
            note = (f" ({n_div} of {len(cell[(mo, me, t)])} diverged: scored as the majority)" if n_div else "") + (
                f" (+{len(gone)} diverged, left out)" if gone else "")
            if stat[(mo, me, t)][2]:
                lines.append(f"| {t} ({DOMAIN.get(t, 'user task')}) | {'/'.join(map(str, n_eval[t]))} | {mo} | {me} "
                             f"| {fmt(*stat[(mo, me, t)], 100)}{note} | {fmt(*f1[(mo, me, t)], 100)} | "
                             f"{fmt_loss(cell[(mo, me, t)])} | {base} |")
            elif gone:
                where = ", ".join(f"k={d['shots']} s{d['seed']}" for d in gone)
                lines.append(f"| {t} ({DOMAIN.get(t, 'user task')}) | — | {mo} | {me} | diverged, no result "
                             f"({len(gone)} run{'s' * (len(gone) > 1)}: {where}) | — | — | {base} |")
    lines += rate_lines(recs, diverged)
    tests = []
    for mo in sorted({r["model"] for r in recs}):
        for ours, base in (("ours", "lora"), ("ours-lm", "lora-lm")):
            acc = {m: {(r["task"], r["seed"]): as_number(r["metrics"]["accuracy"]) for r in recs
                       if r["model"] == mo and r["method"] == m} for m in (ours, base)}
            if acc[ours] and acc[base]:
                tests.append((mo, ours, base, paired(acc[ours], acc[base])))
    if tests:
        p = lambda x: f"{x:.3g}" if math.isfinite(x) else "—"  # noqa: E731
        lines += ["", "## Paired over (task, seed): ours vs lora", "",
                  "| model | method | baseline | pairs | mean diff (pts) | p (t-test) | p (Wilcoxon) |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {mo} | {a} | {b} | {t['n_pairs']} | {t['mean_diff'] * 100:+.2f} | {p(t['p_ttest'])} | "
                  f"{p(t['p_wilcoxon'])} |" for mo, a, b, t in tests]
    tuned_on = sorted({t for v in (tuning or {}).values() if isinstance(v, dict) for t in v.get("tasks", [])})
    if tuned_on:  # none for rows that train nothing (`tuned --untrained`)
        where = ("these tasks' own, carved from their train pools and disjoint from the eval splits scored here"
                 if set(tuned_on) & {r["task"] for r in recs} else "not of these tasks")
        lines += ["", f"Hyperparameters: each method's best point of its tuning study on the selection splits of "
                      f"{', '.join(tuned_on)} ({where}: nothing here was read for a choice), unchanged."]
    lines += ["", *tuning_lines(tuning)] if tuning else []
    (out / "figure3.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return [out / "figure3.png", out / "figure3.md"]

"""Figure 2 (accuracy against the number of shots) and the numbers behind it, from results.json files only.

Owns: which tasks the curves average (those with results at every k; a task a grid skipped at some k because its
pool is too small, from the grids' skipped.json, is named under the plot and left out), the zero-shot point at
k = 0, ``figure2.png``, ``figure2_tasks.png`` (a panel per task, over the k its pool allows), and ``figure2.md`` /
``figure2.csv`` / ``figure2_paired.csv``: per method and k the mean ± std over seeds of the task average, and each
reading of the method (ours, ours-update) against each baseline at each k (not each other, nor ours' ablations: Table
1 pairs those with ours), paired over (task, seed), with Holm's correction over every (reading, baseline, k)
comparison.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gradft.experiments.stats import holm, paired_comparison  # noqa: E402
from gradft.report.answer import GUIDED  # noqa: E402
from gradft.report.outcomes import fmt_loss, fmt_rate, n_results  # noqa: E402
from gradft.report.table1 import (  # noqa: E402
    ABLATIONS,
    BASELINES,
    ICL,
    ZERO,
    as_number,
    diverged_cells,
    diverged_lines,
    fmt,
    hardware_line,
    mean_std,
    method_order,
    paired_row,
    runaway_lines,
    seed_means,
    training_length,
)


def skipped_records(root: Path | list[Path]) -> list[dict[str, Any]]:
    """The cells the grids under ``root`` skipped because the pool was too small (their skipped.json files)."""
    out: list[dict[str, Any]] = []
    for r in root if isinstance(root, list) else [root]:
        for path in Path(r).rglob("skipped.json"):
            with contextlib.suppress(OSError, ValueError, TypeError):
                out += [s for s in json.loads(path.read_text()) if isinstance(s, dict) and "shots" in s and "task" in s]
    return out


def skipped_cells(root: Path | list[Path]) -> dict[str, set[int]]:
    """task -> shot counts a grid skipped because the pool was too small (from the grids' skipped.json)."""
    out: dict[str, set[int]] = defaultdict(set)
    for s in skipped_records(root):
        out[s["task"]].add(int(s["shots"]))
    return out


def layout(recs: list[dict]) -> tuple[list[dict], list[int], list[str], list[str], list[dict]]:
    """(trained records, shot counts, tasks, tasks present at every k, zero-shot records)."""
    trained = [r for r in recs if r["shots"] > 0]
    shots = sorted({r["shots"] for r in trained})
    tasks = sorted({r["task"] for r in trained})
    common = [t for t in tasks if all(any(r["task"] == t and r["shots"] == k for r in trained) for k in shots)]
    return trained, shots, tasks, common, [r for r in recs if r["method"] == ZERO]


def figure2(recs: list[dict], out: Path, root: Path | list[Path]) -> Path:
    """Accuracy vs shots on a log2 axis; zero-shot (k=0) sits one step left of the smallest k, and the curves of
    the prompt-based methods (``*-lm``) start from it."""
    trained, shots, tasks, common, zero = layout(recs)
    zero_pt = mean_std(seed_means(zero, common, "accuracy")) if zero and common else (0.0, 0.0, 0)
    x0 = math.log2(shots[0]) - 1 if shots else 0.0
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in method_order(trained):
        pts = [(math.log2(k), *mean_std(seed_means([r for r in trained if r["method"] == m and r["shots"] == k],
                                                   common, "accuracy"))) for k in shots]
        if (m.endswith("-lm") or m == ICL) and zero_pt[2]:  # icl with no demonstration is zero-shot
            pts = [(x0, *zero_pt), *pts]
        pts = [(k, mu, 0.0 if not math.isfinite(sd) else sd) for k, mu, sd, n in pts if n]
        if not pts:
            continue
        x, mu, sd = (np.array(v, dtype=float) for v in zip(*pts, strict=True))
        ax.plot(x, mu * 100, marker="o", label=m, linestyle="--" if m.endswith("-lm") else "-")
        ax.fill_between(x, (mu - sd) * 100, (mu + sd) * 100, alpha=0.2)
    for key, style in (("baseline_train_majority", "-"), ("baseline_chance", ":")):  # task means; k-independent
        v = floor(trained, common, key)
        if math.isfinite(v):
            ax.axhline(v * 100, color="black" if style == "-" else "gray", linestyle=style, linewidth=1,
                       label=BASELINES[key])
    ticks = [math.log2(k) for k in shots]
    labels = [str(k) for k in shots]
    if zero_pt[2]:
        ax.plot([x0], [zero_pt[0] * 100], marker="*", markersize=14, color="black", linestyle="", label=ZERO)
        ticks, labels = [x0, *ticks], ["0", *labels]
    ax.set_xticks(ticks, labels)
    ax.set_xlabel("training examples per task (k shots, log2 scale; 0 = zero-shot prompt)")
    ax.set_ylabel(f"accuracy (%), mean over {len(common)} task(s)")
    seeds = sorted({r["seed"] for r in recs})
    ax.set_title(f"Accuracy vs shots: {recs[0]['model']}, seeds {','.join(map(str, seeds))} (band: ± std)")
    ax.grid(alpha=0.3)
    ax.legend(title="method")
    fig.text(0.01, 0.01, coverage_note(tasks, common, root), fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(out / "figure2.png", dpi=130)
    plt.close(fig)
    return out / "figure2.png"


def task_points(recs: list[dict]) -> dict[str, dict[str, list[tuple[int, float, float, int]]]]:
    """Per task and method, (k, mean, std, n seeds) of the accuracy at each k that task has."""
    trained = layout(recs)[0]
    out: dict[str, dict[str, list[tuple[int, float, float, int]]]] = {}
    for task in sorted({r["task"] for r in trained}):
        here = [r for r in trained if r["task"] == task]
        for m in method_order(here):
            ks = sorted({r["shots"] for r in here})
            pts = [(k, *mean_std([as_number(r["metrics"]["accuracy"]) for r in here
                                  if r["method"] == m and r["shots"] == k])) for k in ks]
            out.setdefault(task, {})[m] = [p for p in pts if p[3]]
    return out


def figure2_tasks(recs: list[dict], out: Path) -> Path | None:
    """``figure2_tasks.png``: one panel per task, each over the k its pool allows (the averaged Figure 2 keeps only
    the tasks present at every k: on a testbed of small pools that can be one task), the train-pool majority as a
    line; None for a single task (Figure 2 is that task)."""
    points, trained = task_points(recs), layout(recs)[0]
    if len(points) < 2:
        return None
    color = {m: f"C{i}" for i, m in enumerate(method_order(trained))}  # one colour per method, every panel
    fig, axes = plt.subplots(1, len(points), figsize=(4.2 * len(points), 3.8), squeeze=False)
    for ax, (task, curves) in zip(axes[0], points.items(), strict=True):
        for m, pts in curves.items():
            k, mu, sd = (np.array([p[i] for p in pts], dtype=float) for i in range(3))
            ax.plot(np.log2(k), mu * 100, marker="o", label=m, color=color[m])
            ax.fill_between(np.log2(k), (mu - np.nan_to_num(sd)) * 100, (mu + np.nan_to_num(sd)) * 100, alpha=0.2,
                            color=color[m])
        majority = floor(trained, [task], "baseline_train_majority")
        if math.isfinite(majority):
            ax.axhline(majority * 100, color="black", linewidth=1, label=BASELINES["baseline_train_majority"])
        ks = sorted({p[0] for pts in curves.values() for p in pts})
        ax.set_xticks([math.log2(k) for k in ks], [str(k) for k in ks])
        ax.set(title=task, xlabel="k shots (log2)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%), mean ± std over seeds")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "figure2_tasks.png", dpi=130)
    plt.close(fig)
    return out / "figure2_tasks.png"


def floor(trained: list[dict], tasks: list[str], key: str) -> float:
    """A constant baseline (``baseline_*`` of results.json) averaged over ``tasks``; NaN if any task lacks it."""
    per_task = [mean_std([as_number(r["metrics"].get(key)) for r in trained if r["task"] == t])[0] for t in tasks]
    return float(np.mean(per_task)) if per_task and all(math.isfinite(v) for v in per_task) else math.nan


def coverage_note(tasks: list[str], common: list[str], root: Path | list[Path]) -> str:
    skipped = skipped_cells(root)
    notes = [f"{t} (no k in {sorted(skipped[t])}: pool too small)" if skipped.get(t) else f"{t} (missing at some k)"
             for t in tasks if t not in common]
    note = f"Average over {', '.join(common) or 'no task present at every k'}."
    return note + (" Left out: " + "; ".join(notes) + "." if notes else "")


def planned_cells(tuning: dict[str, Any], root: Path | list[Path], shots: int) -> int:
    """The grid file's cells at ``shots`` (every axis but shots), less those its skipped.json lists as infeasible."""
    return tuning["planned_per_shots"] - sum(int(s["shots"]) == shots for s in skipped_records(root))


def planned_trained(tuning: dict[str, Any] | None, root: Path | list[Path]) -> int | None:
    """The trained cells (k > 0) the grid file plans, less the infeasible ones; None without a grid file."""
    if not tuning or "planned_per_shots" not in tuning:
        return None
    return sum(planned_cells(tuning, root, int(k)) for k in tuning["planned_shots"] if int(k) > 0)


def loss_lines(trained: list[dict], methods: list[str], shots: list[int], tasks: list[str], n_seeds: int) -> list[str]:
    """Per method and k the final training loss (mean ± std over its runs), and the divergence rate: diverged
    cells / planned cells (every task with results at that k × seed)."""
    at = {k: {r["task"] for r in trained if r["shots"] == k} for k in shots}
    planned = sum(len(at[k]) for k in shots) * n_seeds
    rows = [[m, *[fmt_loss([r for r in trained if (r["method"], r["shots"]) == (m, k)]) for k in shots],
             fmt_rate(sum(bool(r.get("diverged")) for r in trained if r["method"] == m), planned)] for m in methods]
    return ["## Final training loss and divergence", "",
            "Final training loss: the mean loss over each run's last epoch, mean ± std over its runs (under-training "
            f"shows here). Diverged: diverged cells / planned cells ({len(tasks)} task(s) × {n_seeds} seed(s) at "
            "each k); a diverged cell counts as the train-pool majority's accuracy in every number above.", "",
            "| Method | " + " | ".join(f"loss k={k}" for k in shots) + " | Diverged |", "|---" * (2 + len(shots)) + "|",
            *["| " + " | ".join(r) + " |" for r in rows], ""]


def figure2_table(recs: list[dict], out: Path, root: Path | list[Path], tuning: dict[str, Any] | None = None) -> Path:
    """``figure2.md`` (+ csv): the plot's points as numbers, per-task means, and each reading − each baseline at each k;
    with the grid file's ``tuning`` node (``report --tuning``), a partial grid says how far it got."""
    trained, shots, tasks, common, zero = layout(recs)
    methods = method_order(trained)
    n_seeds = len({r["seed"] for r in trained})  # fewer in a cell: it prints (n=k)
    cols = [0, *shots] if zero else shots
    cell = {(m, k): [r for r in (zero if m == ZERO else trained) if r["method"] == m and r["shots"] == k]
            for m in ([ZERO] if zero else []) + methods for k in cols}
    rows = []  # long format: method, shots, task ("avg" = the plot's task average), mean, std, n
    for (m, k), rs in cell.items():
        if rs:
            rows.append([m, k, "avg", *mean_std(seed_means(rs, common, "accuracy"))])
            rows += [[m, k, t, *mean_std([as_number(r["metrics"]["accuracy"]) for r in rs if r["task"] == t])]
                     for t in tasks if any(r["task"] == t for r in rs)]
    avg = {(m, k): (mu, sd, n) for m, k, t, mu, sd, n in rows if t == "avg"}
    acc = {(m, k): {(r["task"], r["seed"]): as_number(r["metrics"]["accuracy"]) for r in rs if r["task"] in common}
           for (m, k), rs in cell.items()}
    guided = [g for g in GUIDED if g in methods]  # the method's two readings; each meets every baseline, not each other
    baselines = [b for b in methods if b not in GUIDED and b not in ABLATIONS]  # ablations meet ours in Table 1
    tests = {(g, b, k): paired_comparison(acc[(g, k)], acc[(b, k)]) for g in guided for b in baselines for k in shots}
    tests = {gbk: t for gbk, t in tests.items() if t["n_pairs"]}  # a method missing at some k: no comparison there
    for p in ("p_ttest", "p_wilcoxon"):  # one family: every (reading, baseline, k) comparison of the figure
        for t, adj in zip(tests.values(), holm([t[p] for t in tests.values()]), strict=True):
            t[f"{p}_holm"] = adj
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "figure2.csv", "w", newline="") as f:
        csv.writer(f).writerows([["method", "shots", "task", "acc_mean", "acc_std", "n_seeds"],
                                 *[[("" if isinstance(x, float) and not math.isfinite(x) else x) for x in r]
                                   for r in rows]])
    keys = ["n_pairs", "mean_diff", "ci_low", "ci_high", "p_ttest", "p_wilcoxon", "p_ttest_holm", "p_wilcoxon_holm"]
    with open(out / "figure2_paired.csv", "w", newline="") as f:
        csv.writer(f).writerows([["method", "baseline", "shots", *keys],
                                 *[[g, b, k, *[t[x] for x in keys]] for (g, b, k), t in tests.items()]])
    floors = ", ".join(f"{name} {100 * v:.1f}" for key, name in BASELINES.items()
                       if key != "baseline_eval_majority" and math.isfinite(v := floor(trained, common, key)))
    lines = [
        "# Figure 2: accuracy against the number of shots", "",
        f"Model **{recs[0]['model']}**, seeds {', '.join(map(str, sorted({r['seed'] for r in recs})))}, "
        f"{training_length(trained, sorted({r['steps'] for r in trained if 'steps' in r}))}. "
        "Each entry: "
        f"accuracy (%) averaged over the tasks of the plot within each seed, mean ± std over seeds (the points and "
        f"bands of `figure2.png`). {coverage_note(tasks, common, root)} Constant guesses over the same tasks (the "
        f"same at every k): {floors or '—'}. Per task: `figure2.csv`.",
        f"From {n_results(recs)} results.json under `{root}`. {hardware_line(recs)}",
        *diverged_lines(root, recs), *runaway_lines(recs), "",
        "| Method | " + " | ".join(f"k={k}" for k in cols) + " |", "|---" * (1 + len(cols)) + "|",
        *["| " + " | ".join([m, *[fmt(*avg.get((m, k), (math.nan, math.nan, 0)), 100, full=n_seeds) for k in cols]])
          + " |" for m in ([ZERO] if zero else []) + methods], "",
        *loss_lines(trained, methods, shots, tasks, n_seeds),
    ]
    planned, ended = planned_trained(tuning, root), len(trained) + len(diverged_cells(root, recs))
    if planned and ended < planned:
        lines[4:4] = ["", f"**Partial grid: {ended} of the {planned} planned trained cells have ended** (a result or "
                      "a divergence): every number here is at the budget reached, not the planned one; rerun the "
                      "grid to finish it (finished cells are kept)."]
    if tests:
        lines += [f"## {' and '.join(guided)} − each baseline at each k, paired over (task, seed)", "",
                  f"Over the tasks of the plot; mean difference in accuracy points with its bootstrap 95% CI, "
                  f"paired t-test and Wilcoxon signed-rank p-values (two-sided); Holm: corrected over the "
                  f"{sum(math.isfinite(t['p_ttest']) for t in tests.values())} comparisons below with 2 or more pairs.",
                  "",
                  "| Method | Baseline | k | pairs | mean diff (pts) | 95% CI | p (t-test) | p (Wilcoxon) | Holm p (t) "
                  "| Holm p (W) |", "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [paired_row(gbk, t) for gbk, t in tests.items()] + [""]
    (out / "figure2.md").write_text("\n".join(lines))
    return out / "figure2.md"

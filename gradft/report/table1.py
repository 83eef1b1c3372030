"""Table 1 from results.json records (called by ``gradft.report.build``): what tells methods apart.

Owns: the per-method rows (six-task average accuracy as mean ± std over seeds with its 95 % bootstrap CI, gradient
stability, directional alignment, per-task accuracy), the three baseline rows, the paired comparisons over
(task, seed) — ours vs each baseline method (the family Holm corrects), each ablation ``ours-*`` vs ours, each
LM-head method vs its new-head twin — with mean difference, bootstrap CI, t-test and Wilcoxon p-values, the plot of
per-task paired differences (``paired_diffs.png``), and the tuning block (values, ranges, budget) when the grid's
experiment file is given. Files: ``table1.md``, ``table1.csv``, ``table1_paired.csv``.
"""

from __future__ import annotations

import csv
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gradft.config.guidance import superseded_run  # noqa: E402
from gradft.experiments.stats import bootstrap_average_ci, holm, paired_comparison  # noqa: E402
from gradft.report.outcomes import n_results, outcome_cells, scored_lines  # noqa: E402
from gradft.report.tuning import noise_lines  # noqa: E402
from gradft.tracking import ran_on  # noqa: E402

ABLATIONS = ["ours-mag", "ours-dir", "ours-every4", "ours-init"]  # ours with λ1 = 0 / λ2 = 0 / every=4 / init prior
ORDER = ["zero-shot", "icl", "full", "adapter", "lora", "prompt", "ours", *ABLATIONS]
BASELINE_METHODS = ["full", "adapter", "lora", "prompt"]  # the four comparisons Holm's correction runs over
OURS = "ours"
ZERO = "zero-shot"  # head=lm at shots=0: the pretrained LM with the task's prompt, no method applied
ICL = "icl"  # method=icl (head=lm): the k shots as demonstrations in the prompt, no training (gradft.methods.icl)
TASK_METRICS = ("f1_macro", "f1a", "exact_match")
BASELINES = {"baseline_train_majority": "train-pool majority", "baseline_chance": "chance (1/C)",
             "baseline_eval_majority": "eval majority (needs eval labels)"}


def method_order(recs: list[dict]) -> list[str]:
    found = {r["method"] for r in recs}
    return [m for m in ORDER if m in found] + sorted(found - set(ORDER))


def as_number(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and x is not None else float("nan")


def mean_std(values: list[float]) -> tuple[float, float, int]:
    v = [x for x in values if math.isfinite(x)]
    if not v:
        return float("nan"), float("nan"), 0
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"), len(v)


def fmt(m: float, s: float, n: int, scale: float = 1.0, digits: int = 1, full: int = 0) -> str:
    """``mean ± std``; ``(n=k)`` beside it when fewer than ``full`` seeds (a partial grid's cell) or only one."""
    if not math.isfinite(m):
        return "—"
    if n <= 1:
        return f"{m * scale:.{digits}f} (n=1)"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}" + (f" (n={n})" if n < full else "")


def _p(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else "—"


def complete_seeds(cells: dict[tuple[str, int], float], tasks: list[str]) -> dict[tuple[str, int], float]:
    """The (task, seed) cells of the seeds that have every task: the seeds a six-task average exists for."""
    have: dict[int, set[str]] = defaultdict(set)
    for t, s in cells:
        have[s].add(t)
    return {(t, s): v for (t, s), v in cells.items() if set(tasks) <= have[s]}


def seed_means(recs: list[dict], tasks: list[str], metric: str) -> list[float]:
    """Per seed, the mean of ``metric`` over all ``tasks`` (seeds missing a task are left out)."""
    by_seed: dict[int, dict[str, float]] = defaultdict(dict)
    for r in recs:
        by_seed[r["seed"]][r["task"]] = as_number(r["metrics"].get(metric))
    return [float(np.mean([v[t] for t in tasks])) for v in by_seed.values() if set(tasks) <= v.keys()]


def paired(ours: dict[tuple, float], base: dict[tuple, float]) -> dict[str, Any]:
    """ours − baseline over shared (task, seed) pairs: mean difference, paired t-test, Wilcoxon signed-rank (all
    differences zero: both p-values 1; fewer than 2 pairs: NaN).
    ``gradft.experiments.stats.paired_comparison`` without the CI."""
    return {k: v for k, v in paired_comparison(ours, base).items() if k not in ("ci_low", "ci_high")}


def comparisons(methods: list[str]) -> list[tuple[str, str, str]]:
    """(method, baseline, family) for every comparison the table reports; family "holm" is corrected jointly."""
    out = [(OURS, b, "holm") for b in BASELINE_METHODS if OURS in methods and b in methods]
    out += [(OURS, b, "other") for b in methods if OURS in methods and b not in (OURS, ZERO, *BASELINE_METHODS,
                                                                                    *ABLATIONS)]
    out += [(a, OURS, "ablation") for a in ABLATIONS if a in methods and OURS in methods]
    out += [(m, m[:-3], "lm-head") for m in methods if m.endswith("-lm") and m[:-3] in methods]
    return out


def paired_tests(acc: dict[str, dict[tuple, float]]) -> dict[tuple[str, str], dict[str, Any]]:
    tests = {(m, b): {**paired_comparison(acc[m], acc[b]), "family": fam} for m, b, fam in comparisons(list(acc))}
    family = [k for k, t in tests.items() if t["family"] == "holm"]
    for p in ("p_ttest", "p_wilcoxon"):
        adjusted = holm([tests[k][p] for k in family])
        for k, t in tests.items():
            t[f"{p}_holm"] = adjusted[family.index(k)] if k in family else float("nan")
    return tests


def holm_count(tests: dict[tuple[str, str], dict[str, Any]]) -> int:
    """How many comparisons Holm's correction ran over: the family's tests with a p-value (NaN ones are not)."""
    return sum(t["family"] == "holm" and math.isfinite(t["p_ttest"]) for t in tests.values())


def paired_figure(acc: dict[str, dict[tuple, float]], tests: dict, out: Path) -> Path | None:
    """Per task, ours − each baseline (accuracy points): one dot per seed, a bar at the mean."""
    pairs = [k for k, t in tests.items() if t["family"] in ("holm", "other")]
    if not pairs:
        return None
    tasks = sorted({t for m, b in pairs for t, _ in acc[m].keys() & acc[b].keys()})
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(tasks) + 2), 4.2))
    width = 0.8 / len(pairs)
    for i, (m, b) in enumerate(pairs):
        x0 = np.arange(len(tasks)) - 0.4 + width * (i + 0.5)
        for j, task in enumerate(tasks):
            d = [100 * (acc[m][k] - acc[b][k]) for k in sorted(acc[m].keys() & acc[b].keys()) if k[0] == task]
            if d:
                ax.bar(x0[j], np.mean(d), width * 0.9, color=f"C{i}", alpha=0.35, label=b if j == 0 else None)
                ax.scatter([x0[j]] * len(d), d, color=f"C{i}", s=12, zorder=3)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel(f"{OURS} − baseline, accuracy points")
    ax.set_title(f"Paired differences per task ({OURS} − baseline; dots: seeds, bars: mean)")
    ax.legend(title="baseline", fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out / "paired_diffs.png", dpi=130)
    plt.close(fig)
    return out / "paired_diffs.png"


def tuning_lines(tuning: dict[str, Any] | None) -> list[str]:
    """The tuning block of a ``gradft.experiments.tuned`` experiment file: budget, ranges, best values per method."""
    if not tuning:
        return []
    if tuning.get("untrained"):  # `tuned --untrained`: rows that train nothing, written from the specs alone
        return ["## Tuning", "", f"None: these rows train nothing. Written {tuning.get('written', '?')} from the "
                f"specs of {', '.join(tuning.get('studies', []))} (their base only; no study read).", ""]
    rows = ["## Tuning (selection split only)", "",
            ("**PARTIAL: some studies had not met their budget.** " if tuning.get("partial") else "")
            + f"Written {tuning.get('written', '?')}. Each method: the same number of trials (complete + pruned), "
            "scored as mean selection accuracy over the tasks × tuning seeds.", "",
            "| Method | trials (complete / pruned / failed) | tuned values | ranges | select acc | warning |",
            "|---|---|---|---|---|---|"]
    for m, s in tuning.items():
        if not isinstance(s, dict):
            continue
        best = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in s["best"].items())
        ranges = ", ".join(f"{k} [{d['low']:g}, {d['high']:g}]{' log' if d.get('log') else ''}"
                           if d["type"] != "categorical" else f"{k} {d['choices']}" for k, d in s["space"].items())
        edge = ", ".join([*(f"{k} at the {e} end" for k, e in (s.get("at_edge") or {}).items()),
                          *(f"{k} at its own {e} limit (nothing to widen)" for k, e in s.get("at_limit", {}).items())
                          ]) or "—"
        widened = f" = {s['n_trials'] - s['widened']} + {s['widened']} after widening" if s.get("widened") else ""
        rows.append(f"| {m} | {s['n_trials']}{widened} ({s['complete']} / {s['pruned']} / {s['failed']}) | {best} "
                    f"| {ranges} "
                    f"| {100 * s['select_accuracy']:.1f} | {edge} |")
    return [*rows, "", *noise_lines(tuning)]


def hardware_line(recs: list[dict]) -> str:
    """Where the runs executed (results.json "env"), by count: a grid may be finished on other hardware than it
    started on (same configs, same keys; floating-point results differ in their last bits)."""
    where = Counter(ran_on(r) for r in recs if not r.get("diverged"))  # a diverged run scored: no result of its own
    return "Ran on: " + ", ".join(f"{n} on {hw}" for hw, n in where.most_common()) + "."


def diverged_cells(root: Path | list[Path], recs: list[dict] = ()) -> list[str]:
    """Cells (``task/method/kK/sS``) whose run diverged (a non-finite loss or gradient more often than
    trainer.max_skipped allows): an error.json and no results.json; those ``recs`` hold scored (``diverged``
    records: ``gradft.report.outcomes``) are left to ``scored_lines``."""
    roots = [Path(r) for r in root] if isinstance(root, list) else [Path(root)]
    scored = {Path(r["_path"]).resolve() for r in recs if r.get("diverged") and "_path" in r}
    return sorted(str(e.parent.relative_to(r if len(roots) == 1 else r.parent)) for r in roots
                  for e in r.rglob("error.json")
                  if "NonFiniteError" in e.read_text(errors="ignore") and not (e.parent / "results.json").exists()
                  and e.resolve() not in scored and not superseded_run(e.parent))


def diverged_lines(root: Path | list[Path], recs: list[dict] = ()) -> list[str]:
    """The diverged cells: those scored as the train-pool majority (in the means), then those no neighbour could
    score (missing from every mean and paired test); said here, never silently left out."""
    cells = diverged_cells(root, recs)
    return scored_lines(recs) + ([f"**Diverged, no result** ({len(cells)} cell{'s' * (len(cells) > 1)}: non-finite "
                                  "losses beyond trainer.max_skipped, and no result of the same (task, seed) to read "
                                  "its train-pool majority from; left out of the means and the paired tests): "
                                  f"{', '.join(cells)}."] if cells else [])


RUNAWAY = 1e3  # mean ‖H·v‖/‖g‖ above this: guidance, not the task, set the steps (the others: 0.07–260)


def runaway_lines(recs: list[dict]) -> list[str]:
    """Guided cells whose guidance ran away: mean ‖H·v‖/‖g‖ (``guidance_stats.hv_ratio_mean``) over ``RUNAWAY`` or
    non-finite. They finished and count in every mean; said here so that a low number is read as what it is."""
    bad = []
    for r in recs:
        stats = r.get("guidance_stats") or {}
        if "hv_ratio_mean" in stats:
            x = as_number(stats["hv_ratio_mean"])
            if not (math.isfinite(x) and x <= RUNAWAY):
                bad.append(f"{r['task']}/{r['method']}/k{r['shots']}/s{r['seed']} "
                           f"({f'{x:.1e}' if math.isfinite(x) else 'non-finite'})")
    return [f"**Guidance ran away** ({len(bad)} cell{'s' * (len(bad) > 1)}: mean ‖H·v‖/‖g‖ over {RUNAWAY:g} or "
            f"non-finite, so the regularisers and not the task set the steps; kept in the means): "
            f"{', '.join(sorted(bad))}."] if bad else []


def paired_row(labels: tuple, t: dict[str, Any]) -> str:
    """A markdown row: the labels, then pairs | mean diff (pts) | 95% CI | p (t) | p (W) | Holm p (t) | Holm p (W)."""
    ci = f"[{t['ci_low'] * 100:+.1f}, {t['ci_high'] * 100:+.1f}]" if math.isfinite(t["ci_low"]) else "—"
    return (f"| {' | '.join(map(str, labels))} | {t['n_pairs']} | {t['mean_diff'] * 100:+.2f} | {ci} | "
            f"{_p(t['p_ttest'])} | {_p(t['p_wilcoxon'])} | {_p(t['p_ttest_holm'])} | {_p(t['p_wilcoxon_holm'])} |")


def _head(recs: list[dict]) -> str:
    """The head every row shares, for the header: the LM head's rows carry no ``-lm`` suffix then."""
    heads = {r.get("head", "classifier") for r in recs}
    return {frozenset({"lm"}): " with the **prompt + pretrained LM head** (head=lm) in every row",
            frozenset({"classifier"}): " with a **new classifier head**"}.get(frozenset(heads), "")


def training_length(trained: list[dict], steps: list[int]) -> str:
    """The header's training length: fixed steps, or early stopping with its cap and the steps actually run (seen
    in any run that stopped before its cap or kept earlier weights; else every run trained its fixed length)."""
    if not any(r.get("stopped_early") or (r.get("best_step") or 0) < (r.get("steps_run") or 0) for r in trained):
        return f"{'/'.join(map(str, steps))} training steps"
    run = sorted(r["steps_run"] for r in trained if "steps_run" in r)
    best = sorted(r["best_step"] for r in trained if r.get("best_step") is not None)
    return (f"early stopping on the selection split (cap {'/'.join(map(str, steps))} steps; steps run: median "
            f"{run[len(run) // 2]}, range {run[0]}–{run[-1]}; best weights kept, at median step "
            f"{best[len(best) // 2] if best else '—'})")


def constant_guess(trained: list[dict], tasks: list[str], key: str
                   ) -> tuple[dict[tuple[str, int], float], tuple[float, float, int]]:
    """A constant baseline (``baseline_*`` of results.json) per (task, seed), and its task average over seeds
    (mean, std, n) computed as a method's row is."""
    first = {(r["task"], r["seed"]): as_number(r["metrics"].get(key)) for r in trained}
    rows = [{"task": t, "seed": s, "metrics": {"accuracy": v}} for (t, s), v in first.items()]
    return first, mean_std(seed_means(rows, tasks, "accuracy"))


def is_table_task(r: dict[str, Any]) -> bool:
    """A result whose ``data.source`` is files or hub-table: the domain tasks and any user task (not SuperGLUE)."""
    return (r.get("data") or {}).get("source") in ("files", "hub") and "labels" in (r.get("data") or {})


def eval_split(recs: list[dict]) -> str:
    """Where the accuracy is measured: SuperGLUE's official val split, or a table task's eval split."""
    return "the tasks' eval splits" if any(map(is_table_task, recs)) else "the official SuperGLUE val split"


def table1(recs: list[dict], out: Path, root: Path, tuning: dict[str, Any] | None = None) -> dict[str, Any]:
    tasks = sorted({r["task"] for r in recs})
    methods = method_order(recs)
    seeds = sorted({r["seed"] for r in recs})
    n_seeds = len(seeds)  # fewer in a cell: it prints (n=k)
    by_m = {m: [r for r in recs if r["method"] == m] for m in methods}
    acc = {m: {(r["task"], r["seed"]): as_number(r["metrics"]["accuracy"]) for r in by_m[m]} for m in methods}
    header = ["method", "n_seeds", "avg_acc_mean", "avg_acc_std", "avg_acc_ci_low", "avg_acc_ci_high",
              "stability_mean", "stability_std", "alignment_mean", "alignment_std",
              *[f"{t}_acc_{s}" for t in tasks for s in ("mean", "std")], "final_loss", "diverged", "unstable"]
    rows, md_rows = [], []
    planned = len(tasks) * n_seeds  # every method is planned in every (task, seed) cell of the table
    for m in methods:
        cols = [mean_std(seed_means(by_m[m], tasks, k)) for k in ("accuracy", "gradient_stability",
                                                                      "directional_alignment")]
        # the CI resamples the same complete seeds the mean averages (a partial grid's stray cells would move it)
        lo, hi = bootstrap_average_ci(complete_seeds(acc[m], tasks)) if cols[0][2] else (math.nan, math.nan)
        per_task = [mean_std([as_number(r["metrics"]["accuracy"]) for r in by_m[m] if r["task"] == t]) for t in tasks]
        outcome = outcome_cells(by_m[m], planned)
        rows.append([m, cols[0][2], *cols[0][:2], lo, hi, *[x for c in cols[1:] + per_task for x in c[:2]],
                     *outcome])
        ci = f"[{100 * lo:.1f}, {100 * hi:.1f}]" if math.isfinite(lo) else "—"
        md_rows.append([m, fmt(*cols[0], 100, full=n_seeds), ci, *outcome, fmt(*cols[1], digits=3, full=n_seeds),
                        fmt(*cols[2], digits=3, full=n_seeds), *[fmt(*c, 100, full=n_seeds) for c in per_task]])
    trained = [r for r in recs if r["shots"] > 0] or recs
    for key, name in BASELINES.items():  # floors from results.json; older results (drawn-shots majority): "—"
        first, avg = constant_guess(trained, tasks, key)
        per_task = [mean_std([v for (t, _), v in first.items() if t == task]) for task in tasks]
        rows.append([key, avg[2], avg[0], avg[1], "", "", "", "", "", "", *[x for c in per_task for x in c[:2]],
                     "", "", ""])
        md_rows.append([name, fmt(*avg, 100), "—", "—", "—", "—", "—", "—", *[fmt(*c, 100) for c in per_task]])
    tests = paired_tests(acc)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "table1.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *[[("" if isinstance(x, float) and not math.isfinite(x) else x)
                                            for x in row] for row in rows]])
    keys = ["n_pairs", "mean_diff", "ci_low", "ci_high", "p_ttest", "p_wilcoxon", "p_ttest_holm", "p_wilcoxon_holm",
            "family"]
    with open(out / "table1_paired.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "baseline", *keys])
        w.writerows([[m, b, *[t[k] for k in keys]] for (m, b), t in tests.items()])
    figure = paired_figure(acc, tests, out)

    steps = sorted({r["steps"] for r in trained if "steps" in r})
    n_eval = {t: sorted({r.get("eval_examples") for r in recs if r["task"] == t}) for t in tasks}
    lines = [
        "# Table 1: comparison of fine-tuning methods", "",
        f"Model **{recs[0]['model']}**{_head(recs)}, **{trained[0]['shots']}** shots, "
        f"seeds {', '.join(map(str, seeds))} "
        f"(data_seed {'= seed' if all(r['seed'] == r['data_seed'] for r in recs) else 'varies'}), "
        f"{training_length(trained, steps)}. Accuracy (%) on {eval_split(recs)} "
        f"({', '.join(f'{t} {n_eval[t][0] if len(n_eval[t]) == 1 else n_eval[t]}' for t in tasks)} examples); "
        "each entry is mean ± std over seeds (sample std). Avg accuracy, stability and alignment are averaged "
        f"over the {len(tasks)} tasks within each seed first; seeds missing a task are left out of them. 95% CI: "
        "bootstrap of the task average, seeds resampled within each task. Final train loss: mean ± std over runs of "
        "the mean training loss over the last epoch; Diverged: diverged cells / planned (task, seed) cells (a diverged "
        "cell counts as the train-pool majority's accuracy); Unstable: guided runs whose guidance health check "
        "warned / guided runs.",
        f"From {n_results(recs)} results.json under `{root}`. Baselines: train-pool "
        "majority = always the train pool's most frequent class (knowable without eval labels); chance = 1/C; eval "
        "majority = the eval split's own majority rate (the best constant, which needs eval labels). "
        + ("Ablations: ours-mag = λ1 = 0 (magnitude term only), ours-dir = λ2 = 0 (direction term only), ours-every4 "
           "= guidance on every 4th step, ours-init = d_prior from the step-0 k-shot gradient. "
           if any(r["method"] in ABLATIONS for r in recs) else "") + hardware_line(recs),
        *diverged_lines(root, recs), *runaway_lines(recs), "",
        "| Method | Avg accuracy | 95% CI | Final train loss | Diverged | Unstable | Gradient stability | "
        "Directional alignment | " + " | ".join(tasks) + " |",
        "|---" * (8 + len(tasks)) + "|",
        *["| " + " | ".join(map(str, r)) + " |" for r in md_rows], "",
    ]
    planned = (tuning or {}).get("planned_cells")
    if planned and len(trained) < planned:
        lines[4:4] = ["", f"**Partial grid: {len(trained)} of the {planned} planned cells have results** (task × "
                      "method × seed of the grid file): every number here is at the budget reached, not the planned "
                      "one; rerun the grid to finish it (finished cells are kept)."]
    if tests:
        lines += [f"## Paired over (task, seed): {OURS} vs each baseline, each ablation vs {OURS}, each LM-head method "
                  "vs its new-head twin", "",
                  f"Mean difference (method − baseline) in accuracy points with its bootstrap 95% CI; p-values of a "
                  f"paired t-test and a Wilcoxon signed-rank test (two-sided; 1 when every difference is 0, — with "
                  f"fewer than 2 pairs); Holm: corrected over the {holm_count(tests)}"
                  f" comparisons of {OURS} with the baseline methods. Per task: `paired_diffs.png`.", "",
                  "| Method | Baseline | pairs | mean diff (pts) | 95% CI | p (t-test) | p (Wilcoxon) | "
                  "Holm p (t) | Holm p (W) |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [paired_row((m, b), t) for (m, b), t in tests.items()] + [""]
    extra = [(t, k) for t in tasks for k in TASK_METRICS if any(k in r["metrics"] for r in recs if r["task"] == t)]
    if extra:
        lines += ["## Official task metrics (%)", "", "| Method | " + " | ".join(f"{t} {k}" for t, k in extra)
                  + " |", "|---" * (1 + len(extra)) + "|"]
        lines += ["| " + " | ".join([m, *[fmt(*mean_std([as_number(r["metrics"].get(k)) for r in by_m[m]
                                                          if r["task"] == t]), 100) for t, k in extra]]) + " |"
                  for m in methods] + [""]
    lines += tuning_lines(tuning)
    (out / "table1.md").write_text("\n".join(lines))
    return {"header": header, "rows": rows, "tests": tests, "markdown": "\n".join(lines),
            "figures": [figure] if figure else []}

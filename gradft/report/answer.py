"""The answer in one short table (issue 28, item 7): what a README's first screen shows per setting.

Owns ``answer``: per method, accuracy (task average, %) with its bootstrap 95 % CI, the paired difference to LoRA and
to full over the (task, seed) cells both have, the divergence rate and the final training loss. Each guided method
(both readings: ``ours``, ``ours-update``) against each tuned baseline (full, adapter, LoRA, prompt) is one family
of tests, Holm-corrected together; a baseline against another baseline is printed with its uncorrected p (marked †).
A diverged run enters as its train-pool majority, as in Table 1 (``gradft.report.outcomes.score_diverged``).
Two constant guesses close the table, the floor a method must clear: the train-pool majority and the eval majority.
``python -m gradft.report`` writes it as ``answer.md`` beside ``table1.md``.
"""

from __future__ import annotations

import math
from typing import Any

from gradft.experiments.stats import bootstrap_average_ci, holm, paired_comparison
from gradft.report.outcomes import fmt_loss, fmt_rate
from gradft.report.table1 import BASELINES as CONSTANTS
from gradft.report.table1 import complete_seeds, constant_guess, mean_std, seed_means

GUIDED = ("ours", "ours-update")  # the paper's method in its two readings (docs/guidance.md)
BASELINES = ("full", "adapter", "lora", "prompt")
REFERENCES = ("lora", "full")  # the two columns of differences


def _row_order(recs: list[dict]) -> list[str]:
    found = {r["method"] for r in recs}
    order = ["zero-shot", "icl", *BASELINES, *GUIDED]
    return [m for m in order if m in found] + sorted(found - set(order) - {m for m in found if "-" in m})


def tests(acc: dict[str, dict[tuple, float]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Paired comparisons of every method with LoRA and with full; ``p_holm`` for the guided-vs-baseline family."""
    out = {(m, ref): paired_comparison(acc[m], acc[ref]) for ref in REFERENCES if ref in acc for m in acc if m != ref}
    family = [(g, b) for g in GUIDED for b in BASELINES if g in acc and b in acc]
    for g, b in family:  # the family covers every baseline, printed or not (adapter, prompt too)
        out.setdefault((g, b), paired_comparison(acc[g], acc[b]))
    adjusted = holm([out[k]["p_ttest"] for k in family])
    for k, t in out.items():
        t["p_holm"] = adjusted[family.index(k)] if k in family else math.nan
        t["in_family"] = k in family
    return out


def fmt_p(p: float) -> str:
    return "—" if not math.isfinite(p) else "<0.0001" if p < 1e-4 else f"{p:.2g}"


def _delta(t: dict[str, Any] | None) -> str:
    if t is None or not t["n_pairs"]:
        return "—"
    p = t["p_holm"] if t["in_family"] else t["p_ttest"]
    mark = "" if t["in_family"] else "†"
    return f"{_diff(t)} (p {fmt_p(p)}{mark})"


def _diff(t: dict[str, Any]) -> str:
    """The mean paired difference in points, with its bootstrap CI when there are 2 pairs or more."""
    ci = f" [{100 * t['ci_low']:+.1f}, {100 * t['ci_high']:+.1f}]" if t["n_pairs"] >= 2 else ""
    return f"{100 * t['mean_diff']:+.1f}{ci}"


def family_lines(t: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """Every comparison Holm's correction ran over (the short table shows those with LoRA and full only)."""
    fam = sorted((k for k, v in t.items() if v["in_family"] and v["n_pairs"]),
                 key=lambda k: (GUIDED.index(k[0]), BASELINES.index(k[1])))
    rows = []
    for g, b in fam:
        v = t[(g, b)]
        rows.append(f"| {g} | {b} | {v['n_pairs']} | {_diff(v)} | {fmt_p(v['p_ttest'])} | {fmt_p(v['p_holm'])} |")
    if not rows:
        return []
    return ["", "The Holm family, each guided method against each baseline:", "",
            "| Guided | Baseline | Pairs | Δ (pts) [95% CI] | p (t-test) | Holm p |", "|---|---|---|---|---|---|",
            *rows]


def asks(recs: list[dict]) -> bool:
    """Whether the records hold the question's rows: a trained baseline or a guided method (zero-shot and ICL alone,
    ``make signal-untrained``, have Table 1 but nothing to compare)."""
    return any(r["method"] in (*BASELINES, *GUIDED) for r in recs)


def answer(recs: list[dict]) -> dict[str, Any]:
    """The short table's markdown and its numbers. Every method is planned in every (task, seed) cell of ``recs``."""
    tasks = sorted({r["task"] for r in recs})
    planned = len(tasks) * len({r["seed"] for r in recs})
    methods = _row_order(recs)
    acc = {m: {(r["task"], r["seed"]): float(r["metrics"]["accuracy"]) for r in recs if r["method"] == m}
           for m in methods}
    t = tests(acc)
    rows, numbers = [], {}
    for m in methods:
        mine = [r for r in recs if r["method"] == m]
        mean, _, n = mean_std(seed_means(mine, tasks, "accuracy"))
        lo, hi = bootstrap_average_ci(complete_seeds(acc[m], tasks)) if n else (math.nan, math.nan)
        ci = f"[{100 * lo:.1f}, {100 * hi:.1f}]" if math.isfinite(lo) else "—"
        diverged = sum(bool(r.get("diverged")) for r in mine)
        rows.append(f"| {m} | {100 * mean:.1f} {ci} | {_delta(t.get((m, 'lora')))} | {_delta(t.get((m, 'full')))} | "
                    f"{fmt_rate(diverged, planned)} | {fmt_loss(mine)} |")
        numbers[m] = {"accuracy": mean, "ci": (lo, hi), "n_seeds": n, "diverged": diverged}
    trained = [r for r in recs if r.get("shots") != 0] or recs  # as Table 1: the floors of the trained cells
    for key in ("baseline_train_majority", "baseline_eval_majority"):
        mean = constant_guess(trained, tasks, key)[1][0]
        rows.append(f"| *{CONSTANTS[key]}* | {100 * mean:.1f} | | | | |")
        numbers[key] = mean
    family = sum(v["in_family"] and math.isfinite(v["p_ttest"]) for v in t.values())
    lines = ["| Method | Accuracy % [95% CI] | Δ vs LoRA [95% CI] (p) | Δ vs full [95% CI] (p) | Diverged | "
             "Final loss |",
             "|---|---|---|---|---|---|", *rows, "",
             f"Tasks {', '.join(tasks)}; accuracy averaged over the tasks within each seed, then over seeds; CI: "
             "bootstrap over seeds within tasks. Δ: paired over (task, seed), in points, with its bootstrap CI over "
             "the pairs; p: paired t-test, "
             f"Holm-corrected over the {family} comparisons of a guided method with a baseline; † uncorrected. "
             "Diverged: diverged runs / planned cells (scored as the train-pool majority)."]
    lines += family_lines(t)
    return {"markdown": "\n".join(lines), "numbers": numbers, "tests": t}

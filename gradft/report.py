"""Tables and figures from results.json files only: ``python -m gradft.report [--root outputs/grid] [--out DIR]``.

Writes to ``outputs/reports/`` by default (``--out reports`` replaces the committed reports/). Owns: collecting
results (newest wins when a cell appears twice), Table 1 (``table1.md`` / ``.csv``: per method avg accuracy, gradient
stability, directional alignment as mean ± std over seeds, per-task accuracy, the three baseline rows (train-pool
majority, chance, eval majority), and paired tests over (task, seed) pairs of ours vs each baseline and of each
LM-head method ``x-lm`` vs ``x`` in ``table1_paired.csv``), one Table 1 per model when several models are found,
Figure 2 (``figure2.png``: accuracy vs shots), the paper's Figure 4 (``loss_curves.png``: training loss per step),
Figure 3 for the domain tasks (``gradft.report_figure3``), and logging them to W&B as a ``job_type=report`` run (mode
from WANDB_MODE). Never trains or evaluates anything.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

log = logging.getLogger("gradft.report")
ORDER = ["zero-shot", "full", "adapter", "lora", "prompt", "ours"]
OURS = "ours"
ZERO = "zero-shot"  # head=lm at shots=0: the pretrained LM with the task's prompt, no method applied
TASK_METRICS = ("f1_macro", "f1a", "exact_match")
BASELINES = {"baseline_train_majority": "train-pool majority", "baseline_chance": "chance (1/C)",
             "baseline_eval_majority": "eval majority (needs eval labels)"}


def collect(root: str | Path) -> list[dict[str, Any]]:
    """Every readable results.json under root; a cell found twice (table1 and figure2 trees) counts once (newest)."""
    newest: dict[tuple, dict[str, Any]] = {}
    for path in sorted(Path(root).rglob("results.json")):
        try:
            r = json.loads(path.read_text())
            if r.get("head") == "lm":  # prompt-based runs are rows of their own: "zero-shot", "lora-lm", ...
                r["method"] = ZERO if int(r["shots"]) == 0 else f"{r['method']}-lm"
            key = (r["model"], r["method"], r["task"], int(r["shots"]), int(r["seed"]), int(r["data_seed"]))
            r["metrics"]["accuracy"]  # noqa: B018 — a results.json without it is not a finished run
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("skipping %s: %r", path, e)
            continue
        r["_path"], r["_mtime"] = str(path), path.stat().st_mtime
        old = newest.get(key)
        if old and old["config_key"] != r["config_key"]:
            log.warning("%s and %s: same cell, different configs; keeping the newer", old["_path"], path)
        if not old or r["_mtime"] >= old["_mtime"]:
            newest[key] = r
    return list(newest.values())


def _methods(recs: list[dict]) -> list[str]:
    found = {r["method"] for r in recs}
    return [m for m in ORDER if m in found] + sorted(found - set(ORDER))


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and x is not None else float("nan")


def mean_std(values: list[float]) -> tuple[float, float, int]:
    v = [x for x in values if math.isfinite(x)]
    if not v:
        return float("nan"), float("nan"), 0
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"), len(v)


def fmt(m: float, s: float, n: int, scale: float = 1.0, digits: int = 1) -> str:
    if not math.isfinite(m):
        return "—"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}" if n > 1 else f"{m * scale:.{digits}f} (n=1)"


def seed_means(recs: list[dict], tasks: list[str], metric: str) -> list[float]:
    """Per seed, the mean of ``metric`` over all ``tasks`` (seeds missing a task are left out)."""
    by_seed: dict[int, dict[str, float]] = defaultdict(dict)
    for r in recs:
        by_seed[r["seed"]][r["task"]] = _num(r["metrics"].get(metric))
    return [float(np.mean([v[t] for t in tasks])) for v in by_seed.values() if set(tasks) <= v.keys()]


def paired(ours: dict[tuple, float], base: dict[tuple, float]) -> dict[str, Any]:
    """ours − baseline accuracy over shared (task, seed) pairs: mean difference, paired t-test, Wilcoxon signed-rank.
    All differences zero: both p-values are 1 (no evidence of a difference); fewer than 2 pairs: NaN."""
    keys = sorted(ours.keys() & base.keys())
    a, b = np.array([ours[k] for k in keys]), np.array([base[k] for k in keys])
    d = a - b
    out = {"n_pairs": len(keys), "mean_diff": float(d.mean()) if len(keys) else float("nan"),
           "p_ttest": float("nan"), "p_wilcoxon": float("nan")}
    if len(keys) >= 2 and np.all(d == 0):
        out.update(p_ttest=1.0, p_wilcoxon=1.0)
    elif len(keys) >= 2:
        out["p_ttest"] = float(stats.ttest_rel(a, b).pvalue)
        try:
            out["p_wilcoxon"] = float(stats.wilcoxon(d).pvalue)
        except ValueError:
            pass
    return out


def table1(recs: list[dict], out: Path, root: Path) -> dict[str, Any]:
    tasks = sorted({r["task"] for r in recs})
    methods = _methods(recs)
    seeds = sorted({r["seed"] for r in recs})
    by_m = {m: [r for r in recs if r["method"] == m] for m in methods}
    header = ["method", "n_seeds", "avg_acc_mean", "avg_acc_std", "stability_mean", "stability_std",
              "alignment_mean", "alignment_std", *[f"{t}_acc_{s}" for t in tasks for s in ("mean", "std")]]
    rows, md_rows = [], []
    for m in methods:
        cols = [mean_std(seed_means(by_m[m], tasks, k)) for k in ("accuracy", "gradient_stability",
                                                                      "directional_alignment")]
        per_task = [mean_std([_num(r["metrics"]["accuracy"]) for r in by_m[m] if r["task"] == t]) for t in tasks]
        rows.append([m, cols[0][2], *[x for c in cols + per_task for x in c[:2]]])
        md_rows.append([m, fmt(*cols[0], 100), fmt(*cols[1], digits=3), fmt(*cols[2], digits=3),
                        *[fmt(*c, 100) for c in per_task]])
    trained = [r for r in recs if r["shots"] > 0] or recs
    for key, name in BASELINES.items():  # floors from results.json; older results (drawn-shots majority): "—"
        first = {(r["task"], r["seed"]): _num(r["metrics"].get(key)) for r in trained}
        maj = [{"task": t, "seed": s, "metrics": {"accuracy": v}} for (t, s), v in first.items()]
        avg = mean_std(seed_means(maj, tasks, "accuracy"))
        per_task = [mean_std([v for (t, _), v in first.items() if t == task]) for task in tasks]
        rows.append([key, avg[2], avg[0], avg[1], "", "", "", "", *[x for c in per_task for x in c[:2]]])
        md_rows.append([name, fmt(*avg, 100), "—", "—", *[fmt(*c, 100) for c in per_task]])
    acc = {m: {(r["task"], r["seed"]): _num(r["metrics"]["accuracy"]) for r in by_m[m]} for m in methods}
    pairs = [(OURS, b) for b in methods if b != OURS and OURS in acc and b != ZERO]
    pairs += [(m, m[:-3]) for m in methods if m.endswith("-lm") and m[:-3] in acc]  # LM head vs a new head
    tests = {(m, b): paired(acc[m], acc[b]) for m, b in pairs}
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "table1.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *[[("" if isinstance(x, float) and not math.isfinite(x) else x)
                                            for x in row] for row in rows]])
    with open(out / "table1_paired.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "baseline", "n_pairs", "mean_diff", "p_ttest", "p_wilcoxon"])
        w.writerows([[m, b, t["n_pairs"], t["mean_diff"], t["p_ttest"], t["p_wilcoxon"]]
                     for (m, b), t in tests.items()])

    steps = sorted({r["steps"] for r in trained})
    n_eval = {t: sorted({r.get("eval_examples") for r in recs if r["task"] == t}) for t in tasks}
    lines = [
        "# Table 1: comparison of fine-tuning methods", "",
        f"Model **{recs[0]['model']}**, **{trained[0]['shots']}** shots, seeds {', '.join(map(str, seeds))} "
        f"(data_seed {'= seed' if all(r['seed'] == r['data_seed'] for r in recs) else 'varies'}), "
        f"{'/'.join(map(str, steps))} training steps. Accuracy (%) on the official SuperGLUE val split "
        f"({', '.join(f'{t} {n_eval[t][0] if len(n_eval[t]) == 1 else n_eval[t]}' for t in tasks)} examples); "
        "each entry is mean ± std over seeds (sample std). Avg accuracy, stability and alignment are averaged "
        f"over the {len(tasks)} tasks within each seed first; seeds missing a task are left out of them.",
        f"From {len(recs)} results.json under `{root}`, {datetime.now():%Y-%m-%d %H:%M}. Baselines: train-pool "
        "majority = always the train pool's most frequent class (knowable without eval labels); chance = 1/C; eval "
        "majority = the eval split's own majority rate (the best constant, which needs eval labels).", "",
        "| Method | Avg accuracy | Gradient stability | Directional alignment | " + " | ".join(tasks) + " |",
        "|---" * (4 + len(tasks)) + "|",
        *["| " + " | ".join(map(str, r)) + " |" for r in md_rows], "",
    ]
    if tests:
        lines += [f"## Paired over (task, seed): {OURS} vs each baseline, each LM-head method vs its new-head twin",
                  "", "Mean difference (method − baseline) in accuracy points; p-values of a paired t-test and a "
                  "Wilcoxon signed-rank test (two-sided; 1 when every difference is 0, — with fewer than 2 pairs).",
                  "", "| Method | Baseline | pairs | mean diff (pts) | p (t-test) | p (Wilcoxon) |",
                  "|---|---|---|---|---|---|"]
        p = lambda x: f"{x:.3g}" if math.isfinite(x) else "—"
        lines += [f"| {m} | {b} | {t['n_pairs']} | {t['mean_diff'] * 100:+.2f} | {p(t['p_ttest'])} | "
                  f"{p(t['p_wilcoxon'])} |" for (m, b), t in tests.items()] + [""]
    extra = [(t, k) for t in tasks for k in TASK_METRICS if any(k in r["metrics"] for r in recs if r["task"] == t)]
    if extra:
        lines += ["## Official task metrics (%)", "", "| Method | " + " | ".join(f"{t} {k}" for t, k in extra)
                  + " |", "|---" * (1 + len(extra)) + "|"]
        lines += ["| " + " | ".join([m, *[fmt(*mean_std([_num(r["metrics"].get(k)) for r in by_m[m]
                                                          if r["task"] == t]), 100) for t, k in extra]]) + " |"
                  for m in methods] + [""]
    (out / "table1.md").write_text("\n".join(lines))
    return {"header": header, "rows": rows, "tests": tests, "markdown": "\n".join(lines)}


def skipped_cells(root: Path) -> dict[str, set[int]]:
    """task -> shot counts a grid skipped because the pool was too small (from the grids' skipped.json)."""
    out: dict[str, set[int]] = defaultdict(set)
    for path in Path(root).rglob("skipped.json"):
        try:
            for s in json.loads(path.read_text()):
                out[s["task"]].add(int(s["shots"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def figure2(recs: list[dict], out: Path, root: Path) -> Path:
    """Accuracy vs shots on a log2 axis; zero-shot (k=0) sits one step left of the smallest k, and the curves of
    the prompt-based methods (``*-lm``) start from it."""
    trained = [r for r in recs if r["shots"] > 0]
    shots = sorted({r["shots"] for r in trained})
    tasks = sorted({r["task"] for r in trained})
    methods = _methods(trained)
    common = [t for t in tasks if all(any(r["task"] == t and r["shots"] == k for r in trained) for k in shots)]
    zero = [r for r in recs if r["method"] == ZERO]
    zero_pt = mean_std(seed_means(zero, common, "accuracy")) if zero and common else (0.0, 0.0, 0)
    x0 = math.log2(shots[0]) - 1 if shots else 0.0
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in methods:
        pts = [(math.log2(k), *mean_std(seed_means([r for r in trained if r["method"] == m and r["shots"] == k],
                                                   common, "accuracy"))) for k in shots]
        if m.endswith("-lm") and zero_pt[2]:
            pts = [(x0, *zero_pt), *pts]
        pts = [(k, mu, 0.0 if not math.isfinite(sd) else sd) for k, mu, sd, n in pts if n]
        if not pts:
            continue
        x, mu, sd = (np.array(v, dtype=float) for v in zip(*pts, strict=True))
        ax.plot(x, mu * 100, marker="o", label=m, linestyle="--" if m.endswith("-lm") else "-")
        ax.fill_between(x, (mu - sd) * 100, (mu + sd) * 100, alpha=0.2)
    for key, style in (("baseline_train_majority", "-"), ("baseline_chance", ":")):  # task means; k-independent
        per_task = [mean_std([_num(r["metrics"].get(key)) for r in trained if r["task"] == t])[0] for t in common]
        if per_task and all(math.isfinite(v) for v in per_task):
            ax.axhline(float(np.mean(per_task)) * 100, color="black" if style == "-" else "gray", linestyle=style,
                       linewidth=1, label=BASELINES[key])
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
    skipped = skipped_cells(root)
    notes = [f"{t} (no k in {sorted(skipped[t])}: pool too small)" if skipped.get(t) else f"{t} (missing at some k)"
             for t in tasks if t not in common]
    note = f"Average over {', '.join(common) or 'no task present at every k'}."
    if notes:
        note += " Left out: " + "; ".join(notes) + "."
    fig.text(0.01, 0.01, note, fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(out / "figure2.png", dpi=130)
    plt.close(fig)
    return out / "figure2.png"


def loss_curves(recs: list[dict], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in _methods(recs):
        hists = [r.get("history", {}).get("train/loss") or [] for r in recs if r["method"] == m]
        hists = [h for h in hists if h]
        if not hists:
            continue
        arr = np.full((len(hists), max(map(len, hists))), np.nan)
        for i, h in enumerate(hists):
            arr[i, : len(h)] = [_num(x) for x in h]
        steps = np.arange(1, arr.shape[1] + 1)
        mu, sd = np.nanmean(arr, axis=0), np.nan_to_num(np.nanstd(arr, axis=0))
        ax.plot(steps, mu, label=f"{m} ({len(hists)} runs)")
        ax.fill_between(steps, mu - sd, mu + sd, alpha=0.2)
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss (mini-batch)")
    ax.set_title(f"Training loss (Figure 4): {recs[0]['model']}, k={recs[0]['shots']}, mean ± std over tasks × seeds")
    ax.grid(alpha=0.3)
    ax.legend(title="method")
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=130)
    plt.close(fig)
    return out / "loss_curves.png"


def log_wandb(out: Path, table: dict[str, Any], images: list[Path], project: str) -> None:
    from gradft.tracking import resolve_mode

    mode = resolve_mode(os.environ.get("WANDB_MODE", "offline"))
    if mode == "disabled":
        return
    import wandb

    run = wandb.init(project=project, job_type="report", name=f"report-{datetime.now():%Y%m%d-%H%M}", mode=mode,
                     dir=str(out), settings=wandb.Settings(init_timeout=30, silent=True))
    rows = [[None if x == "" or (isinstance(x, float) and not math.isfinite(x)) else x for x in r]
            for r in table["rows"]]
    run.log({"table1": wandb.Table(columns=table["header"], data=rows),
             **{p.stem: wandb.Image(str(p)) for p in images}})
    run.finish()


def model_report(recs: list[dict], out: Path, root: Path, model: str, shots: int | None,
                 project: str) -> dict[str, Any]:
    """Table 1, Figure 2 and the loss curves of one model's SuperGLUE results."""
    recs = [r for r in recs if r["model"] == model]
    shot_counts = Counter(r["shots"] for r in recs)
    if shots is None:
        shots = 32 if 32 in shot_counts else shot_counts.most_common(1)[0][0]
    at_k = [r for r in recs if r["shots"] == shots] + [r for r in recs if r["method"] == ZERO and shots]
    if not any(r["shots"] == shots for r in at_k):
        raise SystemExit(f"no {model} results at shots={shots} under {root} (have {sorted(shot_counts)})")
    out.mkdir(parents=True, exist_ok=True)
    table = table1(at_k, out, root)
    images = []
    if any(r["shots"] for r in recs):  # zero-shot results alone: a table, no curve
        images = [figure2(recs, out, root)]
    if any(r["shots"] for r in at_k):
        images.append(loss_curves([r for r in at_k if r["shots"]], out))
    log_wandb(out, table, images, project)
    print(table["markdown"])
    print(f"wrote {out}/table1.md, table1.csv, table1_paired.csv, {', '.join(p.name for p in images)}")
    return table


def report(root: str | Path = "outputs/grid", out: str | Path = "outputs/reports", shots: int | None = None,
           model: str | None = None, project: str = "gradft") -> dict[str, Any]:
    """Figure 3 from the table (domain / user) tasks' results, every model in one figure; Table 1 + Figure 2 from
    the SuperGLUE results, one set per model (``<out>/<model>/`` when several are found and --model is not given)."""
    from gradft.report_figure3 import figure3, is_table_task

    root, out = Path(root), Path(out)
    recs = collect(root)
    if not recs:
        raise SystemExit(f"no results.json under {root}: run `make table1` (or python -m gradft.grid ...) first")
    domain = [r for r in recs if is_table_task(r) and (model is None or r["model"] == model)]
    glue = [r for r in recs if not is_table_task(r)]
    if domain:
        paths = figure3(domain, out, root)
        print(f"wrote {', '.join(str(p) for p in paths)} (Figure 3: {len(domain)} domain-task results)")
    table: dict[str, Any] = {}
    models = [m for m, _ in Counter(r["model"] for r in glue).most_common()]
    if model:
        if glue and model not in models:
            raise SystemExit(f"no {model} results under {root} (have {models})")
        models = [model] if glue else []
    elif len(models) > 1:
        print(f"results of {len(models)} models under {root} ({', '.join(models)}): one Table 1 per model, in "
              f"{out}/<model>/ (pick one with --model)")
    for m in models:
        table = model_report(glue, out / m if len(models) > 1 else out, root, m, shots, project)
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gradft.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="outputs/grid", help="searched recursively for results.json")
    ap.add_argument("--out", default="outputs/reports",
                    help="default outputs/reports; --out reports replaces the committed reports/")
    ap.add_argument("--shots", type=int, help="Table 1's shot count (default 32, else the most common)")
    ap.add_argument("--model", help="default: the model with the most results")
    ap.add_argument("--project", default="gradft", help="W&B project of the report run")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [report] %(levelname)s %(message)s")
    report(args.root, args.out, args.shots, args.model, args.project)
    return 0


if __name__ == "__main__":
    sys.exit(main())

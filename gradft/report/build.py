"""Tables and figures from results.json files only: ``python -m gradft.report [--root outputs/grid] [--out DIR]``.

Writes to ``outputs/reports/`` by default (``--out reports`` replaces the committed reports/). Owns: collecting
results (newest wins when a cell appears twice), one Table 1 per model when several models are found (built by
``gradft.report.table1``: CIs, paired tests with Holm's correction, ablation rows, ``paired_diffs.png``, the tuning
block with ``--tuning``), Figure 2 (``gradft.report.figure2``: ``figure2.png`` and its numbers), the paper's
Figure 4 (``loss_curves.png``: training loss per step), Figure 3 for the domain tasks (``gradft.report.figure3``),
and logging them to W&B as a ``job_type=report`` run (mode from WANDB_MODE). Never trains or evaluates anything.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import wandb
import yaml

from gradft.config.guidance import GUIDANCE_VERSION, superseded  # noqa: E402
from gradft.experiments.resultfile import inspect, result_files  # noqa: E402
from gradft.report.answer import answer, asks
from gradft.report.figure2 import figure2, figure2_table, figure2_tasks, planned_cells  # noqa: E402
from gradft.report.figure3 import diverged_runs, figure3
from gradft.report.outcomes import n_results, score_diverged  # noqa: E402
from gradft.report.table1 import ICL, ZERO, as_number, is_table_task, method_order, table1  # noqa: E402
from gradft.report.tuning import fill_selection  # noqa: E402
from gradft.tracking import resolve_mode

log = logging.getLogger("gradft.report.build")


def collect(root: str | Path) -> list[dict[str, Any]]:
    """Every valid results.json under root (``gradft.experiments.resultfile``: complete, an accuracy in [0, 1], its
    config.yaml's
    key; anything else is named in one warning and left out, as are results moved to ``superseded/`` and guided
    results of an older guidance version); a cell found twice (table1 and figure2 trees) counts once (newest)."""
    newest: dict[tuple, dict[str, Any]] = {}
    for path in result_files(root):
        v = inspect(path.parent)
        if not v.valid:
            log.warning("skipping %s: %s", path, v.reason)
            continue
        r = v.results
        if "accuracy" not in r["metrics"]:
            log.warning("skipping %s: no metrics.accuracy (a sweep trial's run: select split only)", path)
            continue
        if superseded(r):
            log.warning("skipping %s: guided result of guidance version %s, superseded by version %d "
                        "(results/README.md)", path, r.get("guidance_version", 1), GUIDANCE_VERSION)
            continue
        if r.get("head") == "lm":  # prompt-based runs are rows of their own: "zero-shot", "icl", "lora-lm", ...
            r["method"] = ZERO if r["shots"] == 0 else ICL if r["method"] == ICL else f"{r['method']}-lm"
        key = (r["model"], r["method"], r["task"], r["shots"], r["seed"], r["data_seed"])
        r["_path"], r["_mtime"] = str(path), path.stat().st_mtime
        old = newest.get(key)
        if old and old["config_key"] != r["config_key"]:
            log.warning("%s and %s: same cell, different configs; keeping the newer", old["_path"], path)
        if not old or r["_mtime"] >= old["_mtime"]:
            newest[key] = r
    return list(newest.values())


def loss_curves(recs: list[dict], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in method_order(recs):
        hists = [r.get("history", {}).get("train/loss") or [] for r in recs if r["method"] == m]
        hists = [h for h in hists if h]
        if not hists:
            continue
        arr = np.full((len(hists), max(map(len, hists))), np.nan)
        for i, h in enumerate(hists):
            arr[i, : len(h)] = [as_number(x) for x in h]
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
    mode = resolve_mode(os.environ.get("WANDB_MODE", "offline"))
    if mode == "disabled":
        return

    run = wandb.init(project=project, job_type="report", name=f"report-{datetime.now():%Y%m%d-%H%M}", mode=mode,
                     dir=str(out), settings=wandb.Settings(init_timeout=30, silent=True))
    rows = [[None if x == "" or (isinstance(x, float) and not math.isfinite(x)) else x for x in r]
            for r in table["rows"]]
    run.log({"table1": wandb.Table(columns=table["header"], data=rows),
             **{p.stem: wandb.Image(str(p)) for p in images}})
    run.finish()


def model_report(recs: list[dict], out: Path, root: Path, model: str, shots: int | None,
                 project: str, tuning: dict[str, Any] | None = None) -> dict[str, Any]:
    """Table 1, Figure 2 and the loss curves of one model's SuperGLUE results."""
    recs = [r for r in recs if r["model"] == model]
    if all(r.get("head") == "lm" for r in recs):  # one head (LM): rows by method, so ours meets its baselines
        recs = [{**r, "method": r["method"].removesuffix("-lm")} for r in recs]
    shot_counts = Counter(r["shots"] for r in recs)
    if shots is None:
        shots = 32 if 32 in shot_counts else shot_counts.most_common(1)[0][0]
    at_k = [r for r in recs if r["shots"] == shots] + [r for r in recs if r["method"] == ZERO and shots]
    if not any(r["shots"] == shots for r in at_k):
        raise SystemExit(f"no {model} results at shots={shots} under {root} (have {sorted(shot_counts)})")
    out.mkdir(parents=True, exist_ok=True)
    table = table1(at_k, out, root, planned_at(tuning, root, shots))
    if asks(at_k):
        (out / "answer.md").write_text(answer(at_k)["markdown"] + "\n")
    else:  # zero-shot and ICL alone: no answer.md (a stale one from another grid in this folder goes too)
        (out / "answer.md").unlink(missing_ok=True)
    images = list(table["figures"])
    if len({r["shots"] for r in recs}) > 1:  # a curve needs two shot counts (k = 0 counts: the zero-shot point)
        images = [figure2(recs, out, root), *filter(None, [figure2_tasks(recs, out)])]
        figure2_table(recs, out, root, tuning)
    if any(r["shots"] for r in at_k):
        images.append(loss_curves([r for r in at_k if r["shots"]], out))
    log_wandb(out, table, images, project)
    print(table["markdown"])
    print(f"wrote {out}/table1.md, table1.csv, table1_paired.csv, {', '.join(p.name for p in images)}")
    return table


def _tuning(path: str | Path | None) -> dict[str, Any] | None:
    if not path:
        return None

    doc = yaml.safe_load(Path(path).read_text()) or {}
    node = doc.get("tuning")
    if not node:
        raise SystemExit(f"{path} has no `tuning` node: pass the file `python -m gradft.experiments.tuned` wrote")
    axes = (doc.get("grid") or {}).get("axes") or {}
    if axes:  # what the grid plans at each of its shot counts (planned_at subtracts the infeasible cells)
        node = {**node, "planned_shots": list(axes.get("shots", [])),
                "planned_per_shots": math.prod(len(v) for a, v in axes.items() if a != "shots")}
    return fill_selection(node)  # a grid file from before the tuning-noise block: computed from its studies


def planned_at(tuning: dict[str, Any] | None, root: Path, shots: int) -> dict[str, Any] | None:
    """The tuning node with ``planned_cells``: the grid's cells at this shot count (every axis but shots), less those
    its skipped.json lists as infeasible at it — so that a table from part of the grid says so (the budget reached,
    not the planned one), and a finished one does not."""
    if shots not in (tuning or {}).get("planned_shots", []):
        return tuning
    return {**tuning, "planned_cells": planned_cells(tuning, root, shots)}


def report(root: str | Path | list[str | Path] = "outputs/grid", out: str | Path = "outputs/reports",
           shots: int | None = None, model: str | None = None, project: str = "gradft",
           tuning: str | Path | None = None, seeds: list[int] | None = None,
           all_tasks: bool = False) -> dict[str, Any]:
    """Figure 3 from the table (domain / user) tasks' results, every model in one figure; Table 1 + Figure 2 from
    the SuperGLUE results, one set per model (``<out>/<model>/`` when several are found and --model is not given).
    ``all_tasks``: Table 1, its answer.md and Figure 2 from every task found (a testbed of domain tasks, issue 28's
    signal grids), Figure 3 beside them. Several roots (e.g. each setting's Figure 3 grid) are read together; their
    cells must not overlap."""
    roots = [Path(r) for r in root] if isinstance(root, (list, tuple)) else [Path(root)]
    root, out = (roots[0] if len(roots) == 1 else roots), Path(out)
    tuning_node = _tuning(tuning)
    recs = [r for d in roots for r in collect(d) if seeds is None or r["seed"] in seeds]  # e.g. a partial grid's
    runs = [d for d in diverged_runs(roots) if seeds is None or d["seed"] in seeds]
    recs += score_diverged(runs, recs)[0]  # a diverged run counts as the train-pool majority (outcomes.py)
    if not recs and not any(d["table_task"] for d in diverged_runs(roots)):
        raise SystemExit(f"no results.json under {root}{f' with seeds {seeds}' if seeds else ''}: run `make table1` "
                         "(or python -m gradft.experiments.grid ...) first")
    domain = [r for r in recs if is_table_task(r) and (model is None or r["model"] == model)]
    glue = [r for r in recs if all_tasks or not is_table_task(r)]
    lost = [d for d in diverged_runs(roots) if d["table_task"]]  # a user's only run diverged: still a Figure 3
    if domain or lost:
        paths = figure3(domain, out, root, tuning_node)
        print(f"wrote {', '.join(str(p) for p in paths)} (Figure 3: from {n_results(domain)} domain-task results.json"
              f"{', and the diverged runs it lists' if paths and 'diverged' in paths[-1].read_text() else ''})")
    table: dict[str, Any] = {}
    if glue and len(roots) > 1:
        raise SystemExit("several --root are read together for Figure 3 (domain tasks) only: give Table 1 / Figure 2 "
                         "one root each")
    models = [m for m, _ in Counter(r["model"] for r in glue).most_common()]
    if model:
        if glue and model not in models:
            raise SystemExit(f"no {model} results under {root} (have {models})")
        models = [model] if glue else []
    elif len(models) > 1:
        print(f"results of {len(models)} models under {root} ({', '.join(models)}): one Table 1 per model, in "
              f"{out}/<model>/ (pick one with --model)")
    for m in models:
        table = model_report(glue, out / m if len(models) > 1 else out, root, m, shots, project, tuning_node)
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gradft.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", action="append", help="searched recursively for results.json (default outputs/grid); "
                                                    "several --root: read together (one Figure 3 of every setting)")
    ap.add_argument("--out", default="outputs/reports",
                    help="default outputs/reports; --out reports replaces the committed reports/")
    ap.add_argument("--shots", type=int, help="Table 1's shot count (default 32, else the most common)")
    ap.add_argument("--model", help="default: the model with the most results")
    ap.add_argument("--project", default="gradft", help="W&B project of the report run")
    ap.add_argument("--tuning", help="the grid's experiment file from "
                    "`python -m gradft.experiments.tuned` (conf/experiment/"
                                     "<name>.yaml): its tuned values, ranges and budget go under Table 1")
    ap.add_argument("--seeds", help="only these seeds (comma-separated), e.g. the ones a partial grid has finished")
    ap.add_argument("--all-tasks", action="store_true", help="Table 1, answer.md and Figure 2 from every task found "
                    "(a testbed of domain tasks: the signal grids), not only SuperGLUE; Figure 3 as well")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [report] %(levelname)s %(message)s")
    report(args.root or "outputs/grid", args.out, args.shots, args.model, args.project, args.tuning,
           [int(x) for x in args.seeds.split(",")] if args.seeds else None, args.all_tasks)
    return 0


if __name__ == "__main__":
    sys.exit(main())

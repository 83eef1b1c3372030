"""Compute spent on committed results: ``python -m gradft.experiments.compute [results] [--workers 2]``.

Owns the accounting behind issue 11's budget (≤ 12 hours of this 2-core machine for the whole protocol): the
``wall_time_s`` of every results.json under the root, summed per tree — a grid (``results/<setting>/<grid>``) or a
tuning study (``results/tuning/<setting>/<study>``, its trials together) — in worker-hours, and in machine-hours at
``--workers`` runs side by side (2 workers × 1 thread on the 2 cores: half the worker-hours), one row per tree and
hardware (results.json "env"; runs from before it was recorded ran on the project's 2-core CPU). A lent GPU's rows
give worker-hours only: its runs shared one GPU, many at a time. Runs that failed or were pruned before writing
results.json are not counted (a pruned trial's finished runs are), nor is a copy of a run counted twice: a grid
cell adopted from a sibling grid and a run reused by a retried sweep trial are byte-identical copies of their
results.json, counted once: where it ran — a grid's runs.jsonl names the cells it adopted, and those copies come last
— else where it first appears (a run trained again differs in ``wall_time_s``). Reads results only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from gradft.tracking import ran_on


def tree_of(path: Path, root: Path, task: str) -> str:
    """The tree a run belongs to: its path under root up to the run's task folder, less a study's ``trial_<n>``."""
    parts = path.relative_to(root).parts
    cut = parts.index(task) if task in parts else len(parts) - 1
    head = list(parts[:cut])
    if head and head[-1].startswith("trial_"):
        head.pop()
    return "/".join(head) or "."


def adopted(root: Path) -> set[Path]:
    """The results.json of every cell a grid under root adopted from a sibling ("adopt" events of its runs.jsonl)."""
    out: set[Path] = set()
    for log in root.rglob("runs.jsonl"):
        try:
            lines = log.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                e = json.loads(line)
            except ValueError:  # a line cut by a crash mid-write
                continue
            if isinstance(e, dict) and e.get("event") == "adopt" and isinstance(e.get("cell"), str):
                out.add(log.parent / e["cell"] / "results.json")
    return out


def spent(root: str | Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(tree, hardware) -> {runs, worker_hours, models, precisions, gpu} over every readable results.json under root."""
    root = Path(root)
    out: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {"runs": 0, "worker_hours": 0.0,
                                                                      "models": set(), "precisions": set()})
    seen: set[bytes] = set()  # a digest of every results.json counted: a byte-identical copy is the same computation
    copies = adopted(root)  # counted last: the run's time goes to the grid it ran in, not one that adopted it
    for path in sorted(root.rglob("results.json"), key=lambda p: (p in copies, p)):
        try:
            text = path.read_text()
            r = json.loads(text)
            seconds = float(r["wall_time_s"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        digest = hashlib.sha1(text.encode()).digest()
        if digest in seen:
            continue
        seen.add(digest)
        t = out[(tree_of(path, root, str(r.get("task", ""))), ran_on(r))]
        t["gpu"] = (r.get("env") or {}).get("device") == "cuda"
        t["runs"] += 1
        t["worker_hours"] += seconds / 3600
        t["models"].add(str(r.get("model")))
        cfg = path.with_name("config.yaml")
        t["precisions"].add("bf16" if cfg.exists() and "precision: bf16" in cfg.read_text() else "fp32")
    return dict(out)


def table(trees: dict[tuple[str, str], dict[str, Any]], workers: int) -> str:
    lines = [f"| tree | hardware | runs | worker-hours | machine-hours ({workers} workers) | model | precision |",
             "|---|---|---|---|---|---|---|"]
    for (name, hw), t in sorted(trees.items()):
        machine = "—" if t["gpu"] else f"{t['worker_hours'] / workers:.2f}"
        lines.append(f"| {name} | {hw} | {t['runs']} | {t['worker_hours']:.2f} | {machine} | "
                     f"{', '.join(sorted(t['models']))} | {', '.join(sorted(t['precisions']))} |")
    for hw in sorted({hw for _, hw in trees}):
        mine = [t for (_, h), t in trees.items() if h == hw]
        total = sum(t["worker_hours"] for t in mine)
        machine = "—" if mine[0]["gpu"] else f"{total / workers:.2f}"
        lines.append(f"| **all** | {hw} | {sum(t['runs'] for t in mine)} | {total:.2f} | {machine} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gradft.experiments.compute", description=__doc__.split("\n\n")[0])
    ap.add_argument("root", nargs="?", default="results")
    ap.add_argument("--workers", type=int, default=2, help="runs side by side (machine-hours = worker-hours / this)")
    a = ap.parse_args(argv)
    trees = spent(a.root)
    if not trees:
        print(f"no results.json under {a.root}", file=sys.stderr)
        return 1
    print(table(trees, a.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())

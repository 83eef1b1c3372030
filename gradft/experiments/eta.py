"""A grid's ETA: the seconds its cells still need, estimated from the measured times of its finished cells."""

from __future__ import annotations

import contextlib
import json
from statistics import fmean
from typing import Any


def estimate(p: Any, todo: list[Any], workers: int) -> tuple[float | None, str]:
    """Seconds to run ``todo`` with ``workers`` processes, and what the estimate rests on: the measured
    ``wall_time_s`` of this grid's finished cells (same task, method and shots, else same task and method, else
    same task, else all of them; a zero-shot cell only from zero-shot cells: no training, seconds not minutes) that
    ran on this kind of device (a grid begun on a GPU and finished on a CPU: the GPU's times would mislead;
    results without ``env`` ran on a CPU), else those of any device, else the grid file's
    ``est_seconds_per_cell``, else nothing."""
    import torch

    here = "cuda" if torch.cuda.is_available() else "cpu"
    timed: list[tuple[Any, float, bool]] = []
    for c in set(p.cells) - set(todo):  # the finished ones
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            r = json.loads((p.cell_dir(c) / "results.json").read_text())
            timed.append((c, float(r["wall_time_s"]), (r.get("env") or {}).get("device", "cpu") == here))
    note = ""
    if any(same for _, _, same in timed):
        timed = [t for t in timed if t[2]]
    elif timed:
        note = f" on another device than this {here}"
    def keys(c: Any) -> list[tuple]:  # most to least alike; time grows with k (d_task: a pass over all k shots)
        zs = c.shots == 0
        return [(zs, c.task, c.method, c.shots), (zs, c.task, c.method), (zs, c.task), (zs,)]

    seen: dict[tuple, list[float]] = {}  # each key of keys() -> measured seconds
    for c, w, _ in timed:
        for key in keys(c):
            seen.setdefault(key, []).append(w)
    every = [w for _, w, _ in timed]
    if not every:
        return ((len(todo) * p.est_seconds / max(1, workers), "est_seconds_per_cell of the grid file")
                if p.est_seconds else (None, "no cell measured yet"))
    total = sum(fmean(next((seen[k] for k in keys(c) if k in seen), every)) for c in todo)
    return total / max(1, workers), f"measured on {len(every)} finished cells{note}"

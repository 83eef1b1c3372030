"""The carved selection split (``data.select=pool``): a larger, fixed selection set cut out of the train pool.

Owns ``carve_selection`` and its size rule. With ``data.select=task`` (the default) a task keeps its own selection
split (FewGLUE dev32, or the 32 examples a table task's ``split`` holds out) and nothing here runs. With
``data.select=pool`` the selection split is instead

    n = min(data.select_size, floor(pool / 2))      pool units (MultiRC: questions; else examples)

units of the train pool, drawn stratified by label (largest remainders) with the fixed seed ``SELECT_SEED`` and the
task's name, never with the run's seed or data_seed: the same split for every run, method, seed and k of a task.
The k shots are then drawn from the rest of the pool, so the selection split is disjoint from every draw (and from
eval, which the pool never holds). Half the pool stays for the shots, so any k up to pool - n (≥ pool / 2) can be
drawn. A task whose rule gives no more than ``data.heldout`` (32) units is refused: its pool cannot give a selection
split larger than the one it has (BoolQ and MultiRC here: their pools are only FewGLUE's 32 train examples/questions,
docs/data.md). The task's own selection split is then unused; results.json ``data.select_split`` records the rule,
the seed, the sizes and the label counts.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from typing import Any

from gradft.config.nodes import SELECT_MODES

from .formats import DataError, Example

SELECT_SEED = 0  # fixed: the carved split must not change with the run seed or data_seed
MAX_FRACTION = 0.5  # at most half the pool's units: the rest stays for the shots


def _units(pool: list[Example]) -> dict[str, list[Example]]:
    """Pool -> units in pool order: a MultiRC question (its answer options share ``group``) or one example."""
    units: dict[str, list[Example]] = {}
    for i, ex in enumerate(pool):
        units.setdefault(ex.group if ex.group is not None else f"#{i}", []).append(ex)
    return units


def _unit_label(exs: list[Example]) -> int:
    return Counter(e.label for e in exs).most_common(1)[0][0]


def selection_size(n_units: int, size: int) -> int:
    """The rule: ``min(size, floor(n_units × MAX_FRACTION))``."""
    return min(int(size), int(n_units * MAX_FRACTION))


def carve_selection(task: Any, data: dict[str, Any]) -> Any:
    """``task`` (a TaskData) with ``select`` carved out of ``train_pool`` when ``data.select=pool``; else as it is."""
    mode = data.get("select", "task") or "task"
    if mode not in SELECT_MODES:
        raise DataError(f"data.select={mode!r}: must be one of {', '.join(SELECT_MODES)}")
    if mode == "task":
        return task
    size = data.get("select_size", 500)
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise DataError(f"data.select_size={size!r}: must be a positive integer")
    units = _units(task.train_pool)
    n = selection_size(len(units), size)
    floor = int(data.get("heldout", 32))
    if n <= floor:
        raise DataError(
            f"data.select=pool cannot apply to task {task.name!r}: its train pool has {len(units)} units, so the "
            f"rule min(data.select_size={size}, pool/2) gives {n}, no more than the {floor} of its own selection "
            "split (BoolQ and MultiRC: the pool is FewGLUE's 32 train examples; the official train split is not "
            "here). Use data.select=task for it")
    rng = random.Random(f"select-pool:{task.name}:{SELECT_SEED}")
    by_label: dict[int, list[str]] = {}
    for key, exs in units.items():
        by_label.setdefault(_unit_label(exs), []).append(key)
    exact = {c: n * len(keys) / len(units) for c, keys in sorted(by_label.items())}
    quota = {c: int(q) for c, q in exact.items()}
    for c in sorted(exact, key=lambda c: (quota[c] - exact[c], c))[: n - sum(quota.values())]:
        quota[c] += 1  # largest remainders first
    chosen = {k for c, keys in sorted(by_label.items()) for k in rng.sample(keys, quota[c])}
    held = [key for key in units if key in chosen]
    rng.shuffle(held)  # an eval cap on the selection split must never take one class
    select = [ex for key in held for ex in units[key]]
    pool = [ex for key, exs in units.items() if key not in chosen for ex in exs]
    names = list(task.labels)
    info = dict(task.info)
    info["select_split"] = {
        "mode": "pool", "rule": f"min(data.select_size, floor(pool units × {MAX_FRACTION}))",
        "select_size": size, "seed": SELECT_SEED, "stratify": True, "pool_units": len(units), "units": n,
        "select": len(select), "train_pool": len(pool), "task_select_unused": len(task.select),
        "label_counts": {names[c] if c < len(names) else str(c): k
                         for c, k in sorted(Counter(e.label for e in select).items())},
    }
    info["sizes"] = {**info.get("sizes", {}), "train_pool": len(pool), "select": len(select)}
    return replace(task, train_pool=pool, select=select, info=info)

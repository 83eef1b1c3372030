"""What a run refuses once its data is read, before any model loads: shared by ``run()`` and ``python -m gradft.data``.

Owns `draw_for_run` (the k-shot draw under ``data.balance``: more shots than the pool, a class short of its quota
under ``strict``; and head=lm's label words against the classes read from the data) and `source_label_index` (how a
guidance source task's classes map onto the target's head: by name, or by ``guidance.source_label_map``, never by
position). The inspect command calls the same functions, so it exits 2 for exactly what a run refuses. Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gradft.config.prompt import prompt_spec

from .formats import Example
from .sampling import sample_shots
from .superglue import TaskData


def draw_for_run(cfg: Any, task: TaskData) -> list[Example]:
    """The run's k shots (none for shots=0); ValueError/DataError for what the run cannot do with this data."""
    if cfg.get("head", "classifier") == "lm":

        prompt_spec(cfg.task, len(task.labels), task.multiple_choice)  # label words vs the classes read
    if not cfg.shots:
        return []
    return sample_shots(task.train_pool, cfg.shots, cfg.data_seed, cfg.data.balance)


def source_label_index(source: TaskData, task: TaskData, name: str,
                       label_map: Mapping[str, Any] | None) -> dict[int, int]:
    """Source class index -> target class index for head=classifier cross-task guidance. A source label maps to the
    target label of the same name, or to ``label_map[label]``; any other source label is an error (two tasks with
    three classes each are not the same three classes: CB's entailment is not a sentiment's negative)."""
    if source.multiple_choice != task.multiple_choice:
        raise ValueError(f"guidance.source_task={name}: must be the same kind of task as {task.name}")
    mapping = {str(k).lower(): str(v).lower() for k, v in (label_map or {}).items()}
    target = [t.lower() for t in task.labels]
    index, unmapped = {}, []
    for i, label in enumerate(source.labels):
        to = mapping.get(label.lower(), label.lower())
        if to not in target:
            if label.lower() in mapping:
                raise ValueError(f"guidance.source_label_map maps {label!r} to {to!r}, not a label of {task.name} "
                                 f"{task.labels}")
            unmapped.append(label)
            continue
        index[i] = target.index(to)
    if unmapped:
        example = ",".join(f"{s}:?" for s in unmapped)
        raise ValueError(f"guidance.source_task={name} has labels {source.labels}, {task.name} has {task.labels}: "
                         f"{unmapped} have no label of the same name; say which is which: "
                         f"guidance.source_label_map={{{example}}}, each ? one of {task.labels} (labels are never "
                         "matched by position)")
    return index

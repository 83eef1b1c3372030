"""Any task's three splits: ``load_task(task_cfg, data_cfg) -> TaskData``, the one entry point of the data layer.

A task config with ``dir:`` is a SuperGLUE task (``superglue.py``: the local jsonl layout or the super_glue hub
dataset, by ``data.source``); any other is a table task (``custom.py``: files or any hub dataset; docs/tasks.md).
With ``data.select=pool`` the selection split is then carved out of the train pool (``selection.py``).
"""

from __future__ import annotations

from typing import Any

from .custom import load_table_task
from .formats import TaskData, plain
from .selection import carve_selection
from .superglue import load_superglue


def load_task(task_cfg: Any, data_cfg: Any) -> TaskData:
    """Load train pool, selection and evaluation splits of one task (see conf/task/*.yaml, docs/tasks.md)."""
    task, data = plain(task_cfg), plain(data_cfg)
    if "dir" in task:
        loaded = load_superglue(task, data)
    else:
        loaded = TaskData(name=task["name"], multiple_choice=False, **load_table_task(task, data))
    return carve_selection(loaded, data)

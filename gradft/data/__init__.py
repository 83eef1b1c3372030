"""Data layer of gradft: SuperGLUE / FewGLUE loading, per-task formatting, k-shot sampling, batching.

Public API (others depend on these names): Example, TaskData, DataError, load_task, sample_shots,
Collator, iterate_batches. Helpers hub_to_examples, hold_out, mark_span and COPA_CONNECTORS are
exported for tests and tools. See docs/tasks.md for the per-task formatting.
"""

from .collate import Collator, iterate_batches
from .formats import COPA_CONNECTORS, DataError, Example, TaskData, mark_span
from .sampling import sample_shots
from .superglue import hold_out, hub_to_examples, is_multiple_choice
from .tasks import load_task

__all__ = [
    "COPA_CONNECTORS",
    "Collator",
    "DataError",
    "Example",
    "TaskData",
    "hold_out",
    "hub_to_examples",
    "is_multiple_choice",
    "iterate_batches",
    "load_task",
    "mark_span",
    "sample_shots",
]

"""A task's ``prompt:`` node (``head=lm``) as a validated ``PromptSpec``, checked against the task's fields.

Torch-free on purpose: ``gradft.config.schema.validate`` calls ``prompt_spec`` before any heavy import, so a template
that
names a field the task does not have (``{nope}``) fails in about a second, before a model is built or W&B starts.
Rendering and batching are ``gradft.data.prompting``'s.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

# the named fields each data format gives an Example (gradft/data/formats.py; tests/test_prompting.py checks them
# against real examples), plus the derived ones of gradft.data.prompting.fields_of
FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "wic": ("word", "sentence1", "sentence2"),
    "copa": ("premise", "question", "choice1", "choice2"),
    "multirc": ("paragraph", "question", "answer"),
}
CANDIDATE_FIELDS = ("choice", "choice_lc")


@dataclass
class PromptSpec:
    template: str  # str.format over the example's fields, e.g. "{passage}\nQuestion: {question}?\nAnswer:"
    verbalizer: list[str] = field(default_factory=list)  # label words in class order, e.g. [" No", " Yes"]
    candidate: str = ""  # multiple choice: each continuation, e.g. " {choice_lc}" (choice, first letter lower-case)
    connective: dict[str, str] = field(default_factory=dict)  # COPA: question -> {connective}, e.g. cause: because
    max_length: int | None = None  # tokens per prompt row (null: model.max_length): long passages need more

    def __post_init__(self) -> None:
        if not isinstance(self.template, str) or not self.template.strip():
            raise ValueError(f"task.prompt.template={self.template!r}: must be a non-empty string")
        if bool(self.verbalizer) == bool(self.candidate):
            raise ValueError("task.prompt: set exactly one of `verbalizer` (label words) and `candidate` "
                             f"(multiple choice); got verbalizer={self.verbalizer!r} candidate={self.candidate!r}")
        if self.max_length is not None and (isinstance(self.max_length, bool) or not isinstance(self.max_length, int)
                                            or self.max_length < 8):
            raise ValueError(f"task.prompt.max_length={self.max_length!r}: must be null or an integer ≥ 8")
        if self.verbalizer and (len(self.verbalizer) < 2 or not all(isinstance(w, str) and w.strip()
                                                                    for w in self.verbalizer)):
            raise ValueError(f"task.prompt.verbalizer={self.verbalizer!r}: must be ≥ 2 non-empty label words")


def task_fields(task_cfg: Mapping[str, Any], spec: PromptSpec) -> set[str]:
    """The fields a template of this task may use: the format's raw fields and the derived ones."""
    fmt = task_cfg.get("format")
    names = set(task_cfg.get("fields") or ()) if fmt == "pair" else set(FORMAT_FIELDS.get(fmt, ()))
    if "premise" in names:
        names.add("premise_stem")
    if spec.connective and "question" in names:
        names.add("connective")
    return names


def _placeholders(template: str, key: str) -> set[str]:
    """The field names of a template; anything but a plain ``{name}`` is refused: attribute or index access
    (``{premise.__class__}`` prints object internals into the prompt), a conversion or a format spec
    (``{premise:>200000000}`` pads every prompt to 200 MB)."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:  # an unbalanced brace
        raise ValueError(f"{key}={template!r}: not a format string ({e}); write a literal brace as {{{{ or }}}}") \
            from None
    names = set()
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            field = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"{key}: {field} is not a plain field name; a template takes only {{field}} "
                             "(no attribute or index access, conversion or format spec)")
        names.add(name)
    return names


def check_fields(task_cfg: Mapping[str, Any], spec: PromptSpec) -> None:
    """Every ``{name}`` of the template (and of ``candidate``) must be a field of the task."""
    allowed = task_fields(task_cfg, spec)
    for key, text, ok in (("task.prompt.template", spec.template, allowed),
                          ("task.prompt.candidate", spec.candidate, set(CANDIDATE_FIELDS))):
        bad = sorted(n for n in _placeholders(text, key) if n not in ok)
        if bad:
            raise ValueError(f"{key} uses {', '.join('{' + b + '}' for b in bad)}, but task={task_cfg.get('name')} "
                             f"has only the fields {', '.join(sorted(ok))}")


def prompt_spec(task_cfg: DictConfig | Mapping[str, Any], n_classes: int, multiple_choice: bool) -> PromptSpec:
    """The task config's ``prompt`` node as a validated PromptSpec that fits the task's classes and fields."""
    node = task_cfg.get("prompt")
    if node is None:
        raise ValueError(f"task={task_cfg.get('name')}: head=lm needs a `prompt:` node (template + verbalizer)")
    values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    unknown = set(values) - {"template", "verbalizer", "candidate", "connective", "max_length"}
    if unknown:
        raise ValueError(f"task.prompt: unknown keys {sorted(unknown)}")
    spec = PromptSpec(**values)
    if multiple_choice and not spec.candidate:
        raise ValueError(f"task={task_cfg.get('name')} is multiple choice: task.prompt needs `candidate`")
    if not multiple_choice and len(spec.verbalizer) != n_classes:
        raise ValueError(f"task.prompt.verbalizer={spec.verbalizer!r}: needs one word per class ({n_classes})")
    check_fields(task_cfg, spec)
    return spec

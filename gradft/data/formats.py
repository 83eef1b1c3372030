"""Per-task formatting: turns raw SuperGLUE records into `Example`s.

Owns `Example`, `DataError`, the format registry (`pair | wic | copa | multirc`, picked by the task
config's `format`), WiC target-word marking, the COPA connectors, label-value normalisation, and the
conversion of rows in either the local jsonl schema or the (flattened) hub schema.

Format functions raise `DataError` without a location; `rows_to_examples` prefixes the location
(file + line, or hub split + row) so every message says where the problem is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

FORMATS = ("pair", "wic", "copa", "multirc")

# COPA: the premise is followed by a question that makes the relation explicit; each choice is then
# scored as the second segment of a (premise + connector, choice) pair.
COPA_CONNECTORS = {"cause": " What was the cause?", "effect": " What happened as a result?"}


class DataError(ValueError):
    """Any problem with the data or the task config; the message says what and where."""


@dataclass(frozen=True)
class Example:
    texts: tuple[str, ...]  # classification: 1 or 2 text segments fed as a (text_a, text_b) pair
    label: int  # class index into TaskData.labels; for choice tasks: index of the correct choice
    choices: tuple[tuple[str, ...], ...] = ()  # multiple choice (COPA): each choice's segments
    group: str | None = None  # MultiRC: question id "<passage idx>-<question idx>"
    idx: str = ""  # stable id from the file (e.g. "17" or "6-2-334")
    fields: tuple[tuple[str, str], ...] = ()  # raw named fields, for prompt templates (head=lm): (("premise", ..),)

    @property
    def field_map(self) -> dict[str, str]:
        return dict(self.fields)


LabelFn = Callable[[Any], int]  # raw label value -> class index (raises DataError)


def norm_label(value: Any) -> str:
    """Normalised label value, so YAML `false`/`0` matches JSON false/0 ("false", "0")."""
    return str(value).lower()


def label_names(task_cfg: Mapping[str, Any]) -> list[str]:
    """Class names in index order: `label_names` from the task config, else the normalised `labels`."""
    names = task_cfg.get("label_names") or task_cfg["labels"]
    return [norm_label(v) for v in names]


def local_label_fn(values: Sequence[Any]) -> LabelFn:
    """Label resolver for the jsonl files: raw value -> its position in the task config's `labels`."""
    allowed = [norm_label(v) for v in values]
    index = {v: i for i, v in enumerate(allowed)}
    if len(index) != len(allowed):
        raise DataError(f"task config `labels` has duplicate values after normalisation: {allowed}")

    def label_of(raw: Any) -> int:
        if raw is None:
            raise DataError("record has no label (unlabelled split, e.g. test.jsonl?); use a labelled split")
        key = norm_label(raw)
        if key not in index:
            raise DataError(
                f"unknown label value {raw!r}; allowed values: {allowed} (the task config's `labels`, "
                "compared as lower-case strings). Fix the record or the task config."
            )
        return index[key]

    return label_of


def hub_label_fn(n_classes: int) -> LabelFn:
    """Label resolver for hub rows, whose labels are already ClassLabel indices (-1 = unlabelled)."""

    def label_of(raw: Any) -> int:
        if raw is None or (isinstance(raw, int) and raw == -1):
            raise DataError("row has no label (label -1: unlabelled test split?)")
        if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw < n_classes:
            raise DataError(f"unknown label value {raw!r}; expected a class index in 0..{n_classes - 1}")
        return raw

    return label_of


def _field(row: Mapping[str, Any], key: str) -> Any:
    if key not in row or row[key] is None:
        raise DataError(f"missing field {key!r} (fields present: {sorted(row)})")
    return row[key]


def mark_span(sentence: str, start: int, end: int) -> str:
    """Wrap sentence[start:end] in asterisks: ("A real class act.", 7, 12) -> "A real *class* act."."""
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(sentence)):
        raise DataError(f"bad target-word offsets start={start!r} end={end!r} for sentence {sentence!r}")
    return f"{sentence[:start]}*{sentence[start:end]}*{sentence[end:]}"


def format_pair(row: Mapping[str, Any], cfg: Mapping[str, Any], label_of: LabelFn) -> list[Example]:
    texts = tuple(str(_field(row, f)) for f in cfg["fields"])
    named = tuple(zip(cfg["fields"], texts, strict=True))
    return [Example(texts=texts, label=label_of(row.get("label")), idx=str(row.get("idx", "")), fields=named)]


def format_wic(row: Mapping[str, Any], cfg: Mapping[str, Any], label_of: LabelFn) -> list[Example]:
    word, raw1, raw2 = (str(_field(row, k)) for k in ("word", "sentence1", "sentence2"))
    s1 = mark_span(raw1, _field(row, "start1"), _field(row, "end1"))
    s2 = mark_span(raw2, _field(row, "start2"), _field(row, "end2"))
    named = (("word", word), ("sentence1", raw1), ("sentence2", raw2))
    return [Example(texts=(f"{word}: {s1}", s2), label=label_of(row.get("label")), idx=str(row.get("idx", "")),
                    fields=named)]


def format_copa(row: Mapping[str, Any], cfg: Mapping[str, Any], label_of: LabelFn) -> list[Example]:
    question = str(_field(row, "question"))
    if question not in COPA_CONNECTORS:
        raise DataError(f"unknown COPA question {question!r}; expected one of {sorted(COPA_CONNECTORS)}")
    premise, choice1, choice2 = (str(_field(row, k)) for k in ("premise", "choice1", "choice2"))
    context = premise + COPA_CONNECTORS[question]
    choices = ((context, choice1), (context, choice2))
    named = (("premise", premise), ("question", question), ("choice1", choice1), ("choice2", choice2))
    return [Example(texts=(), label=label_of(row.get("label")), choices=choices, idx=str(row.get("idx", "")),
                    fields=named)]


def format_multirc(row: Mapping[str, Any], cfg: Mapping[str, Any], label_of: LabelFn) -> list[Example]:
    """Nested local schema: passage{text, questions[{question, idx, answers[{text, idx, label}]}]}."""
    p_idx = _field(row, "idx")
    passage = _field(row, "passage")
    if not isinstance(passage, Mapping):
        raise DataError(
            f"field 'passage' should be an object with 'text' and 'questions', got {passage!r:.80}"
        )
    text = str(_field(passage, "text"))
    out = []
    for q in _field(passage, "questions"):
        group = f"{p_idx}-{_field(q, 'idx')}"
        question = str(_field(q, "question"))
        for a in _field(q, "answers"):
            answer = str(_field(a, "text"))
            out.append(
                Example(
                    texts=(text, f"{question} {answer}"),
                    label=label_of(a.get("label")),
                    group=group,
                    idx=f"{group}-{_field(a, 'idx')}",
                    fields=(("paragraph", text), ("question", question), ("answer", answer)),
                )
            )
    return out


def format_multirc_hub(row: Mapping[str, Any], cfg: Mapping[str, Any], label_of: LabelFn) -> list[Example]:
    """Flattened hub schema: paragraph, question, answer, idx{paragraph, question, answer}, label."""
    ids = _field(row, "idx")
    group = f"{_field(ids, 'paragraph')}-{_field(ids, 'question')}"
    paragraph, question, answer = (str(_field(row, k)) for k in ("paragraph", "question", "answer"))
    return [
        Example(
            texts=(paragraph, f"{question} {answer}"), label=label_of(row.get("label")), group=group,
            idx=f"{group}-{_field(ids, 'answer')}",
            fields=(("paragraph", paragraph), ("question", question), ("answer", answer)),
        )
    ]


FormatFn = Callable[[Mapping[str, Any], Mapping[str, Any], LabelFn], list[Example]]
LOCAL_FORMATS: dict[str, FormatFn] = {
    "pair": format_pair,
    "wic": format_wic,
    "copa": format_copa,
    "multirc": format_multirc,
}
# The hub schema equals the local one except for MultiRC (flattened) and int ClassLabel labels.
HUB_FORMATS: dict[str, FormatFn] = {**LOCAL_FORMATS, "multirc": format_multirc_hub}


def rows_to_examples(
    rows: Iterable[Mapping[str, Any]],
    task_cfg: Mapping[str, Any],
    label_of: LabelFn,
    where: Callable[[int, Mapping[str, Any]], str],
    hub: bool = False,
) -> list[Example]:
    """Format every row; a DataError is re-raised prefixed with `where(row_number, row)`."""
    fmt = (HUB_FORMATS if hub else LOCAL_FORMATS)[task_cfg["format"]]
    out: list[Example] = []
    for i, row in enumerate(rows):
        try:
            out.extend(fmt(row, task_cfg, label_of))
        except DataError as exc:
            raise DataError(f"{where(i, row)}: {exc}") from None
        except (TypeError, KeyError, AttributeError) as exc:  # wrong JSON shape, e.g. a list where a dict was
            raise DataError(
                f"{where(i, row)}: record does not fit format {task_cfg['format']!r}: {exc!r}"
            ) from None
    return out


@dataclass
class TaskData:
    name: str  # "rte"
    labels: list[str]  # class names in index order; COPA: ["choice1", "choice2"]
    multiple_choice: bool  # True for COPA
    train_pool: list[Example]  # what k-shot sampling draws from
    select: list[Example]  # selection split for hyper-parameter search (FewGLUE dev32, or held out)
    eval: list[Example]  # the reported split (official val)
    info: dict[str, Any] = field(default_factory=dict)  # provenance for results.json: files + sha256, split, sizes


def plain(cfg: Any) -> dict[str, Any]:
    """OmegaConf DictConfig / mapping / None -> plain dict (resolved)."""
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise DataError(f"expected a config mapping, got {type(cfg).__name__}")

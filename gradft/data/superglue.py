"""Loading SuperGLUE / FewGLUE splits into a `TaskData`, from local jsonl files or the HF hub.

Owns `load_superglue`, task-config validation, root resolution, jsonl reading with precise
error messages (file + 1-based line), the hub path (`hub_to_examples`, testable offline with an
in-memory `datasets.Dataset`) and the held-out selection split (`hold_out`).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .formats import (
    FORMATS,
    DataError,
    Example,
    TaskData,
    hub_label_fn,
    label_names,
    local_label_fn,
    plain,
    rows_to_examples,
)
from .sources import quiet_datasets, set_root_hint
from .tables import sha256_file

log = logging.getLogger(__name__)

# `root` in a split config -> (key in the data config, placeholder shown in error messages)
ROOTS = {
    "superglue": ("superglue_root", "/path/to/super_glue"),
    "fewglue": ("fewglue_root", "/path/to/fewglue"),
}
HUB_SPLITS = {"train": "train", "eval": "validation"}  # hub source: which hub split feeds which role
HELDOUT_SEED = 0  # fixed: the held-out selection split must not change with the run seed


def validate_task_cfg(task: Mapping[str, Any]) -> None:
    """Raise DataError for a task config that cannot work (missing keys, unknown format, ...)."""
    name = task.get("name", "<unnamed task>")
    missing = [k for k in ("name", "dir", "format", "labels", "train", "eval") if task.get(k) in (None, "")]
    if missing:
        raise DataError(f"task config {name!r} lacks {missing}; see conf/task/rte.yaml for the schema")
    if task["format"] not in FORMATS:
        raise DataError(f"task {name!r}: unknown format {task['format']!r}; expected one of {list(FORMATS)}")
    if task["format"] == "pair" and not (
        isinstance(task.get("fields"), list) and len(task["fields"]) in (1, 2)
    ):
        raise DataError(f"task {name!r}: format=pair needs `fields`: a list of 1 or 2 field names")
    if len(task["labels"]) < 2 or len(label_names(task)) != len(task["labels"]):
        raise DataError(f"task {name!r}: need >= 2 `labels` (and as many `label_names`, if given)")
    for role in ("train", "select", "eval"):
        split = task.get(role)
        if split is None and role == "select":
            continue
        if (
            not isinstance(split, Mapping)
            or "split" not in split
            or split.get("root") not in (*ROOTS, "heldout")
        ):
            raise DataError(
                f"task {name!r}: `{role}` must look like {{root: superglue|fewglue, split: <name>}}"
                + (" (or {root: heldout})" if role == "select" else "")
                + f", got {split!r}"
            )


def resolve_root(data_cfg: Mapping[str, Any], root: str) -> Path:
    """The folder for `root` (superglue | fewglue); relative paths resolve against the current directory."""
    key, placeholder = ROOTS[root]
    value = data_cfg.get(key)
    if not value:
        raise DataError(f"data.{key} is not set; {set_root_hint(key, placeholder)}, or use data.source=hub")
    path = Path(str(value)).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    if not path.is_dir():
        raise DataError(
            f"data root not found: looked for {path} (data.{key}={value!r}). "
            f"Point elsewhere: {set_root_hint(key, placeholder)}, or use data.source=hub"
        )
    return path


def _scan_jsonl(path: Path) -> list[dict[str, Any]]:
    """Parse line by line with json.loads; DataError names the first malformed (1-based) line."""
    rows = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}: line {lineno} is not valid UTF-8 ({exc.reason})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}: malformed JSON on line {lineno}: {exc.msg} (column {exc.colno})"
                ) from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {lineno} is not a JSON object (got {type(row).__name__})")
            rows.append(row)
    return rows


def _line_numbers(path: Path) -> list[int]:
    """1-based line numbers of the non-blank lines, i.e. of record 0, 1, 2, ..."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        return [n for n, line in enumerate(fh, start=1) if line.strip()]


# (resolved path, mtime_ns, size) -> the rows `datasets` read: a grid, sweep or test process loads the same splits
# run after run, and turning the Arrow table back into dicts was ~40% of a tiny run. Callers only read the rows.
_ROWS: dict[tuple[str, int, int], tuple[dict[str, Any], ...]] = {}
_ROWS_MAX = 16


def read_jsonl(path: Path, hint: str = "") -> list[dict[str, Any]]:
    """Records of a jsonl file, via `datasets` (json builder); on failure re-scan to locate the bad line."""
    if not path.is_file():
        raise DataError(
            f"file not found: looked for {path} (layout <root>/<dir>/<split>.jsonl). {hint}".rstrip()
        )
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key in _ROWS:
        return list(_ROWS[key])
    try:
        with quiet_datasets() as datasets:
            rows = list(datasets.load_dataset("json", data_files=str(path), split="train"))
        if rows:
            while len(_ROWS) >= _ROWS_MAX:
                del _ROWS[next(iter(_ROWS))]  # the oldest
            _ROWS[key] = tuple(rows)
    except Exception as exc:  # noqa: BLE001 - any datasets / arrow failure -> precise re-scan below
        rows = _scan_jsonl(path)
        # Every line is valid JSON: datasets failed for another reason (e.g. mixed types across rows);
        # the plain rows are just as good, and label/field checks below give precise messages.
        log.warning("datasets could not load %s (%r); using plain json rows", path, exc)
    if not rows:
        raise DataError(f"{path}: split is empty (no records)")
    return rows


def _load_local(task: dict[str, Any], data: dict[str, Any], split: Mapping[str, Any]) -> list[Example]:
    key, placeholder = ROOTS[split["root"]]
    path = resolve_root(data, split["root"]) / task["dir"] / f"{split['split']}.jsonl"
    hint = (
        f"Point elsewhere with data.{key}={placeholder}, fix the task's `dir`/`split`, or use data.source=hub"
    )
    rows = read_jsonl(path, hint)
    lines: list[int] = []

    def where(i: int, row: Mapping[str, Any]) -> str:
        if not lines:
            lines.extend(_line_numbers(path))
        line = lines[i] if i < len(lines) else i + 1
        return f"{path} line {line} (idx={row.get('idx')!r})"

    examples = rows_to_examples(rows, task, local_label_fn(task["labels"]), where)
    if not examples:
        raise DataError(f"{path}: no examples after formatting (empty split)")
    return examples


def hub_to_examples(dataset: Any, task_cfg: Any, where: str = "hub") -> list[Example]:
    """Convert rows in hub schema (int ClassLabel labels; MultiRC flattened) into Examples.

    `dataset` is any iterable of row dicts, e.g. `datasets.Dataset.from_list([...])`.
    """
    task = plain(task_cfg)
    examples = rows_to_examples(
        dataset, task, hub_label_fn(len(task["labels"])), lambda i, row: f"{where} row {i}", hub=True
    )
    if not examples:
        raise DataError(f"{where}: split is empty")
    return examples


def _load_hub(task: dict[str, Any], data: dict[str, Any], split: str) -> list[Example]:
    hub_id = data.get("hub_id") or "super_glue"
    hub_name = task.get("hub_name") or task["name"]
    try:
        with quiet_datasets() as datasets:
            ds = datasets.load_dataset(hub_id, hub_name, split=split)
    except Exception as exc:  # network / cache / loading-script errors all end up here
        raise DataError(
            f"could not load hub dataset {hub_id!r} (config {hub_name!r}, split {split!r}): {exc}. "
            "Offline? Use data.source=local with the local SuperGLUE layout: "
            + set_root_hint("superglue_root", "/path/to/super_glue")
        ) from exc
    return hub_to_examples(ds, task, where=f"hub {hub_id}/{hub_name} split {split}")


def hold_out(pool: list[Example], n: int, seed: int = HELDOUT_SEED) -> tuple[list[Example], list[Example]]:
    """Split `n` units off `pool` -> (rest, held). Units are MultiRC questions (group) or examples."""
    units: dict[str, list[Example]] = {}
    for i, ex in enumerate(pool):
        units.setdefault(ex.group if ex.group is not None else f"#{i}", []).append(ex)
    if not 0 < n < len(units):
        raise DataError(
            f"cannot hold out {n} of {len(units)} pool units; set data.heldout between 1 and {len(units) - 1}"
        )
    held_keys = set(random.Random(seed).sample(sorted(units), n))
    rest = [ex for k, exs in units.items() if k not in held_keys for ex in exs]
    held = [ex for k, exs in units.items() if k in held_keys for ex in exs]
    return rest, held


def _content_key(ex: Example) -> tuple[Any, ...]:
    return (ex.texts, ex.choices, ex.label)


def is_multiple_choice(task_cfg: Mapping[str, Any]) -> bool:
    """Whether a task config's examples are choices to score (COPA's format) rather than texts to classify."""
    return task_cfg.get("format", "pair") == "copa"


def _local_paths(task: dict[str, Any], data: dict[str, Any]) -> list[Path]:
    """The jsonl files a local SuperGLUE task reads (DataError if a root is missing)."""
    roles = [task["train"], task["eval"], *([task["select"]] if task.get("select") else [])]
    return [resolve_root(data, s["root"]) / task["dir"] / f"{s['split']}.jsonl"
            for s in roles if s["root"] != "heldout"]


def resolve_source(task: dict[str, Any], data: dict[str, Any]) -> str:
    """data.source=auto: local when the task's local roots exist, else the hub; local | hub pass through."""
    source = data.get("source", "local")
    if source != "auto":
        return source
    try:
        _local_paths(task, data)
        return "local"
    except DataError as exc:
        log.info("data.source=auto: %s; trying the hub (%s)", exc, data.get("hub_id") or "super_glue")
        return "hub"


def load_superglue(task: dict[str, Any], data: dict[str, Any]) -> TaskData:
    """A SuperGLUE task's three splits, from the local jsonl layout or the super_glue hub dataset (``data.source``)."""
    validate_task_cfg(task)
    source = resolve_source(task, data)
    heldout = int(data.get("heldout", 32))
    select_cfg = task.get("select")
    info: dict[str, Any] = {"source": source}
    if source == "local":
        if (
            select_cfg
            and select_cfg["root"] != "heldout"
            and ((select_cfg["root"], select_cfg["split"]) == (task["eval"]["root"], task["eval"]["split"]))
        ):
            raise DataError(f"task {task['name']!r}: `select` must not be the reported `eval` split")
        pool = _load_local(task, data, task["train"])
        eval_ = _load_local(task, data, task["eval"])
        if select_cfg and select_cfg["root"] != "heldout":
            select = _load_local(task, data, select_cfg)
        else:
            pool, select = hold_out(pool, heldout)
            info["split"] = {"seed": HELDOUT_SEED, "select": heldout}
        info["files"] = [{"path": str(p), "sha256": sha256_file(p)} for p in _local_paths(task, data)]
    elif source == "hub":
        try:
            pool = _load_hub(task, data, HUB_SPLITS["train"])
            eval_ = _load_hub(task, data, HUB_SPLITS["eval"])
        except DataError as exc:
            if data.get("source") != "auto":
                raise
            raise DataError(f"task {task['name']!r}: no data. Local: {_local_error(task, data)}. Hub: {exc}") from None
        pool, select = hold_out(pool, heldout)
        info["split"] = {"seed": HELDOUT_SEED, "select": heldout}
        info["hub"] = {"hub_id": data.get("hub_id") or "super_glue", "hub_name": task.get("hub_name") or task["name"]}
    else:
        raise DataError(f"unknown data.source {source!r}; expected auto, local or hub")
    # FewGLUE dev32 is drawn from the official train split: keep selection examples out of the k-shot pool.
    select_keys = {_content_key(ex) for ex in select}
    kept = [ex for ex in pool if _content_key(ex) not in select_keys]
    if len(kept) < len(pool):
        log.info("%s: removed %d selection examples from the train pool", task["name"], len(pool) - len(kept))
    if not kept:
        raise DataError(f"task {task['name']!r}: train pool is empty once selection examples are removed")
    info["sizes"] = {"train_pool": len(kept), "select": len(select), "eval": len(eval_)}
    return TaskData(
        name=task["name"],
        labels=label_names(task),
        multiple_choice=is_multiple_choice(task),
        train_pool=kept,
        select=select,
        eval=eval_,
        info=info,
    )


def _local_error(task: dict[str, Any], data: dict[str, Any]) -> str:
    try:
        _local_paths(task, data)
    except DataError as exc:
        return str(exc)
    return "found"

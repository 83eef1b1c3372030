"""A task from any labelled table: files (``.jsonl/.json/.csv/.tsv``) or a hub dataset, described by one task yaml.

Owns `load_table_task` and the table-task schema (docs/tasks.md, "Add your own task"): which files or hub splits feed
`train` / `select` / `eval`, the text `fields` (1 or 2) and `label_field`, `labels` (listed, or inferred from the train
pool in sorted order), `filter`, `map_labels`, `dedup`, and the seeded `split` that carves `select` and `eval` out of
the train file (or subsamples a given eval file). A label's surrounding whitespace is stripped (``"pos "`` is ``"pos"``,
with a warning naming the file and line); a file split's unknown keys are refused. Everything it did is recorded in
`TaskData.info` (files and their sha256, the split seed, sizes, label counts, what was removed and why, warnings),
which run() writes to results.json.
A SuperGLUE task config (one with `dir:`) never comes here.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from .formats import DataError, Example, norm_label
from .sources import quiet_datasets, set_root_hint
from .tables import read_table, sha256_file

TABLE_KEYS = {"name", "source", "root", "encoding", "fields", "label_field", "labels", "filter", "map_labels", "dedup",
              "train", "select", "eval", "split", "metrics", "prompt", "hub_id", "hub_name", "data_files", "format",
              "label_names", "description"}
SPLIT_KEYS = {"seed", "select", "eval", "stratify"}
FILE_KEYS = {"path", "encoding", "kind", "delimiter", "columns"}  # a split read from files
HUB_KEYS = {"split"}
log = logging.getLogger(__name__)
Row = tuple[str, dict[str, Any]]  # (where: "file line N" / "hub ... row N", record)


def validate_table_cfg(task: Mapping[str, Any]) -> None:
    """DataError for a table-task config that cannot work: unknown keys, fields, splits, split sizes."""
    name = task.get("name", "<unnamed task>")
    unknown = set(task) - TABLE_KEYS
    if unknown:
        raise DataError(f"task {name!r}: unknown keys {sorted(unknown)}; a table task knows {sorted(TABLE_KEYS)}")
    if task.get("source", "files") not in ("files", "hub"):
        raise DataError(f"task {name!r}: source={task['source']!r}; expected files or hub")
    if task.get("format", "pair") != "pair":
        raise DataError(f"task {name!r}: a table task is format=pair (1 or 2 text `fields`), got {task['format']!r}")
    fields = task.get("fields")
    if not (isinstance(fields, list) and len(fields) in (1, 2) and all(isinstance(f, str) for f in fields)):
        raise DataError(f"task {name!r}: `fields` must list 1 or 2 text field names, got {fields!r}")
    labels = task.get("labels")
    if labels is not None and (not isinstance(labels, list) or len(labels) < 2):
        raise DataError(f"task {name!r}: `labels` must list >= 2 label values (or be omitted: inferred)")
    key = "split" if task.get("source") == "hub" else "path"
    if not isinstance(task.get("train"), Mapping) or key not in task["train"]:
        raise DataError(f"task {name!r}: `train` must look like {{{key}: ...}}, got {task.get('train')!r}")
    for role in ("train", "select", "eval"):
        spec = task.get(role)
        extra = set(spec) - (HUB_KEYS if task.get("source") == "hub" else FILE_KEYS) if isinstance(spec, Mapping) \
            else set()
        if extra:
            raise DataError(f"task {name!r}: unknown keys {sorted(extra)} in `{role}`; a "
                            f"{'hub split' if task.get('source') == 'hub' else 'file split'} knows "
                            f"{sorted(HUB_KEYS if task.get('source') == 'hub' else FILE_KEYS)}")
    split = task.get("split") or {}
    if set(split) - SPLIT_KEYS:
        raise DataError(f"task {name!r}: unknown `split` keys {sorted(set(split) - SPLIT_KEYS)}; known {SPLIT_KEYS}")
    for k in ("select", "eval"):
        v = split.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0
                              or (isinstance(v, float) and v >= 1)):
            raise DataError(f"task {name!r}: split.{k}={v!r} must be a count (int >= 0) or a fraction in (0, 1)")
    if task.get("eval") is None and not split.get("eval"):
        raise DataError(f"task {name!r}: no `eval` split: give eval: {{{key}: ...}} or carve one with split.eval")


def _file_rows(task: dict[str, Any], spec: Mapping[str, Any], files: list[dict[str, Any]], role: str) -> list[Row]:
    paths = spec["path"] if isinstance(spec["path"], list) else [spec["path"]]
    root = Path(str(task["root"])).expanduser() if task.get("root") else Path.cwd()
    out: list[Row] = []
    for p in paths:
        path = Path(str(p)).expanduser()
        path = path if path.is_absolute() else root / path
        columns = spec.get("columns")
        records = read_table(path, spec.get("encoding") or task.get("encoding") or "utf-8", spec.get("kind"),
                             spec.get("delimiter"), list(columns) if columns is not None else None)
        files.append({"role": role, "path": str(path), "sha256": sha256_file(path), "records": len(records)})
        out += [(f"{path} line {line}", rec) for line, rec in records]
    return out


def _hub_rows(task: dict[str, Any], spec: Mapping[str, Any], files: list[dict[str, Any]], role: str) -> list[Row]:
    hub_id, name, split = task.get("hub_id"), task.get("hub_name"), spec["split"]
    if not hub_id:
        raise DataError(f"task {task['name']!r}: source=hub needs `hub_id` (a dataset id, or json/csv/parquet "
                        "with `data_files`)")
    kwargs = {"data_files": task["data_files"]} if task.get("data_files") else {}
    try:
        with quiet_datasets() as datasets:
            ds = datasets.load_dataset(hub_id, name, split=split, **kwargs)
    except Exception as exc:  # network, cache, unknown split: one message naming what was asked for
        raise DataError(f"could not load hub dataset {hub_id!r} (config {name!r}, split {split!r}): {exc}") from exc
    feature = ds.features.get(task.get("label_field", "label"))
    names = getattr(feature, "names", None)  # a ClassLabel: ints -> its names
    files.append({"role": role, "hub_id": hub_id, "hub_name": name, "split": split, "records": len(ds),
                  "fingerprint": getattr(ds, "_fingerprint", None)})
    rows = []
    for i, rec in enumerate(ds):
        if names is not None and isinstance(rec.get(task.get("label_field", "label")), int):
            lab = rec[task.get("label_field", "label")]
            rec = {**rec, task.get("label_field", "label"): names[lab] if 0 <= lab < len(names) else None}
        rows.append((f"hub {hub_id}/{name} split {split} row {i}", rec))
    return rows


def _to_examples(task: dict[str, Any], rows: list[Row], removed: Counter,
                 spaced: dict[str, str]) -> list[tuple[str, str, Example]]:
    """Filter, map labels, build Examples; returns (where, raw label, example with label -1 for now). A label with
    surrounding whitespace is stripped (its first spelling and where it occurs go to ``spaced``)."""
    lf = task.get("label_field", "label")
    keep = {k: {str(v) for v in vs} for k, vs in (task.get("filter") or {}).items()}
    mapping = {str(k): v for k, v in (task.get("map_labels") or {}).items()}
    out = []
    for where, rec in rows:
        missing = [f for f in [*task["fields"], lf, *keep] if f not in rec]
        if missing:
            raise DataError(f"{where}: unknown field(s) {missing}; the record has {sorted(rec)} "
                            "(task `fields`, `label_field`, `filter`)")
        if any(str(rec[k]) not in vs for k, vs in keep.items()):
            removed["filter"] += 1
            continue
        raw = rec[lf]
        if raw is None or str(raw) == "":
            raise DataError(f"{where}: no label in field {lf!r} (an unlabelled split?)")
        raw = str(raw)
        if raw != raw.strip() and raw not in mapping:  # "pos " and "pos" are one class, said once per spelling
            spaced.setdefault(raw, where)
            raw = raw.strip()
        if raw in mapping:
            if mapping[raw] is None:
                removed["map_labels"] += 1
                continue
            raw = str(mapping[raw])
        texts = tuple("" if rec[f] is None else str(rec[f]) for f in task["fields"])
        ex = Example(texts=texts, label=-1, idx=where.rsplit("/", 1)[-1], fields=tuple(zip(task["fields"], texts,
                                                                                             strict=True)))
        out.append((where, raw, ex))
    return out


def _dedup(items: list, removed: Counter, warnings: list[str]) -> list:
    """Keep the first occurrence of each exact text (whitespace-stripped); count conflicting labels."""
    first: dict[tuple[str, ...], str] = {}
    out = []
    for item in items:
        key = tuple(t.strip() for t in item[2].texts)
        if key in first:
            removed["duplicates"] += 1
            removed["duplicate_label_conflicts"] += int(first[key] != item[1])
            continue
        first[key] = item[1]
        out.append(item)
    return out


def _count(spec: float | int | None, n: int) -> int:
    if not spec:
        return 0
    return int(spec) if isinstance(spec, int) else round(float(spec) * n)


def carve(items: list, n: int, seed: int, stratify: bool, what: str) -> tuple[list, list]:
    """Split n items off (seeded; per class in proportion when stratify) -> (rest in input order, carved shuffled)."""
    if n <= 0:
        return items, []
    if n >= len(items):
        raise DataError(f"split.{what}={n} leaves no train pool ({len(items)} examples in all); lower it")
    rng = random.Random(f"{seed}:{what}")
    if stratify:
        by: dict[int, list[int]] = {}
        for i, it in enumerate(items):
            by.setdefault(it[2].label, []).append(i)
        exact = {c: n * len(ix) / len(items) for c, ix in sorted(by.items())}
        quota = {c: int(q) for c, q in exact.items()}
        for c in sorted(exact, key=lambda c: (quota[c] - exact[c], c))[: n - sum(quota.values())]:
            quota[c] += 1  # largest remainders first
        chosen = {i for c, ix in sorted(by.items()) for i in rng.sample(ix, quota[c])}
    else:
        chosen = set(rng.sample(range(len(items)), n))
    carved = [it for i, it in enumerate(items) if i in chosen]
    rng.shuffle(carved)  # files are often sorted by label: an eval.max_examples cap must not take one class
    return [it for i, it in enumerate(items) if i not in chosen], carved


def _domain_hint(task: dict[str, Any], data: Mapping[str, Any]) -> str:
    """For a task whose `root` lies under data.domain_root (the shipped domain tasks) and is missing: how to set it."""
    domain, root = data.get("domain_root"), task.get("root")
    if task.get("source") == "hub" or not domain or not root or not str(root).startswith(str(domain)):
        return ""
    if Path(str(root)).expanduser().is_dir():
        return ""
    hint = set_root_hint("domain_root", "/path/to/domain")
    return f" (data.domain_root={str(domain)!r} has no {Path(str(root)).name}/: {hint})"


def load_table_task(task: dict[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """Read, clean and split a table task; returns the pieces of a TaskData (train_pool, select, eval, labels, info)."""
    validate_table_cfg(task)
    hub = task.get("source") == "hub"
    read = _hub_rows if hub else _file_rows
    files: list[dict[str, Any]] = []
    removed: Counter = Counter()
    warnings: list[str] = []
    spaced: dict[str, str] = {}
    try:
        roles = {r: _to_examples(task, read(task, task[r], files, r), removed, spaced)
                 for r in ("train", "select", "eval") if task.get(r) is not None}
    except DataError as exc:
        raise DataError(f"{exc}{_domain_hint(task, data)}") from None
    for raw, where in spaced.items():
        warnings.append(f"label {raw!r} ({where}) has surrounding whitespace: read as {raw.strip()!r}, the same "
                        "class as that spelling")
        log.warning("%s", warnings[-1])
    if task.get("dedup"):
        roles = {r: _dedup(items, removed, warnings) for r, items in roles.items()}
        held = {tuple(t.strip() for t in it[2].texts) for r in ("select", "eval") for it in roles.get(r, [])}
        n0 = len(roles["train"])
        roles["train"] = [it for it in roles["train"] if tuple(t.strip() for t in it[2].texts) not in held]
        removed["train_texts_also_in_select_or_eval"] = n0 - len(roles["train"])
    if removed["duplicate_label_conflicts"]:
        warnings.append(f"{removed['duplicate_label_conflicts']} duplicated texts carried different labels "
                        "(the first occurrence was kept)")
    listed = task.get("labels")
    values = [str(v) for v in listed] if listed else sorted({raw for _, raw, _ in roles["train"]})
    index = {norm_label(v): i for i, v in enumerate(values)}
    if len(index) != len(values):
        raise DataError(f"task {task['name']!r}: `labels` has duplicate values after normalisation: {values}")
    if len(values) < 2:
        raise DataError(f"task {task['name']!r}: the train pool has only the label(s) {values}: need >= 2 classes")
    for role, items in roles.items():
        for n, (where, raw, ex) in enumerate(items):
            if norm_label(raw) not in index:
                why = "listed in `labels`" if listed else "seen in the train pool (labels are inferred from it)"
                raise DataError(f"{where}: label {raw!r} ({role} split) is not {why}: {values}. Fix `labels`, "
                                "or merge/drop it with `map_labels`")
            items[n] = (where, raw, replace(ex, label=index[norm_label(raw)]))
    split = {"seed": 0, "stratify": True, **(task.get("split") or {})}
    items = roles["train"]
    if "eval" in roles:  # a given eval file: split.eval subsamples it (bounded eval on CPU)
        n = _count(split.get("eval"), len(roles["eval"]))
        roles["eval"] = carve(roles["eval"], n, split["seed"], split["stratify"], "eval")[1] if n else roles["eval"]
    else:
        items, roles["eval"] = carve(items, _count(split["eval"], len(items)), split["seed"], split["stratify"], "eval")
    if "select" not in roles:
        n_sel = split.get("select", data.get("heldout", 32))
        items, roles["select"] = carve(items, _count(n_sel, len(items)), split["seed"], split["stratify"], "select")
    roles["train"] = items
    for role, items in roles.items():
        if not items and role != "select":
            raise DataError(f"task {task['name']!r}: the {role} split is empty (after filter/map_labels/dedup/split)")
    pool_labels = {it[2].label for it in roles["train"]}
    absent = sorted({values[it[2].label] for r in ("eval", "select") for it in roles[r]} - {values[c]
                                                                                          for c in pool_labels})
    if absent:
        raise DataError(f"task {task['name']!r}: label(s) {absent} occur in eval/select but not in the train pool; "
                        "a few-shot draw can never teach them: drop or merge them with `map_labels`")
    empty = sum(1 for items in roles.values() for it in items if not any(t.strip() for t in it[2].texts))
    if empty:
        warnings.append(f"{empty} examples have empty text")
    if not task.get("dedup"):
        seen = {tuple(t.strip() for t in it[2].texts) for it in roles["train"]}
        shared = sum(1 for r in ("select", "eval") for it in roles[r] if tuple(t.strip() for t in it[2].texts) in seen)
        if shared:
            warnings.append(f"{shared} select/eval texts also occur in the train pool (leak): set `dedup: true`")
    exs = {r: [it[2] for it in items] for r, items in roles.items()}
    names = [norm_label(v) for v in (task.get("label_names") or values)]
    info = {
        "source": "hub" if hub else "files", "files": files, "labels": values, "labels_inferred": not listed,
        "split": split, "sizes": {"train_pool": len(exs["train"]), "select": len(exs["select"]),
                                  "eval": len(exs["eval"])},
        "label_counts": {r: {names[c]: n for c, n in sorted(Counter(e.label for e in v).items())}
                         for r, v in exs.items()},
        "removed": dict(removed), "warnings": warnings,
    }
    return {"labels": names, "train_pool": exs["train"],
            "select": exs["select"], "eval": exs["eval"], "info": info}

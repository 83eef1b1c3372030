"""Reload a run's saved model and predict: ``python -m gradft.trained.predict <run_dir> --input <file> [--out
preds.jsonl]``.

``--input`` reads a .jsonl/.json/.csv/.tsv file with the run's task's fields (the task's own format: SuperGLUE's jsonl
schema, or a table task's ``fields`` / ``label_field``; docs/tasks.md); labels are optional (without them there is
no accuracy). ``--eval`` re-scores the run's own eval split (same cap, batch size and batches) and checks the metrics
against its results.json: exit 1 if they differ. Rows are those of predictions.jsonl (``gradft.trained.save``): id,
gold,
predicted label, per-class scores; to ``--out`` (atomically) or stdout. What a run saves: docs/models_out.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from gradft import data as gdata
from gradft.data.formats import DataError, Example, norm_label, rows_to_examples
from gradft.data.tables import read_table
from gradft.evaluate import eval_examples, make_collator, predict
from gradft.metrics import task_metrics
from gradft.trained.save import load_meta, load_model, prediction_rows, task_view, write_predictions


def read_examples(path: str | Path, cfg: DictConfig, meta: dict[str, Any]) -> list[Example]:
    """The file's records as the run's task's Examples; a missing or empty label gives label -1 (unlabelled)."""
    task = OmegaConf.to_container(cfg.task, resolve=True)
    records = read_table(path)
    index = {norm_label(v): i for i, v in enumerate(meta["label_values"])}
    mapping = {str(k): v for k, v in (task.get("map_labels") or {}).items()}

    def label_of(raw: Any) -> int:
        raw = mapping.get(str(raw), raw) if raw is not None else None
        if raw is None or str(raw) == "":
            return -1
        if norm_label(raw) not in index:
            raise DataError(f"unknown label value {raw!r}; the run's task has {meta['label_values']}")
        return index[norm_label(raw)]

    if "dir" in task:  # a SuperGLUE-format task: its formatter (pair, wic, copa, multirc: the local jsonl schema)
        return rows_to_examples([rec for _, rec in records], task, label_of,
                                lambda i, row: f"{path} line {records[i][0]}")
    fields, lf = task["fields"], task.get("label_field", "label")
    out = []
    for line, rec in records:
        missing = [f for f in fields if f not in rec]
        if missing:
            raise DataError(f"{path} line {line}: no field(s) {missing}; the record has {sorted(rec)} (task "
                            f"{task['name']} reads {fields})")
        texts = tuple("" if rec[f] is None else str(rec[f]) for f in fields)
        out.append(Example(texts=texts, label=label_of(rec.get(lf)), idx=str(rec.get("idx", rec.get("id", line))),
                           fields=tuple(zip(fields, texts, strict=True))))
    return out


def score(run_dir: str | Path, examples: list[Example] | None = None, device: str = "cpu",
          batch_size: int | None = None) -> tuple[list[dict[str, Any]], dict[str, float], DictConfig]:
    """Reload the run's model and score ``examples`` (None: its eval split, as the run capped it):
    (prediction rows, metrics over the labelled rows, the run's config)."""
    model, tok, cfg, meta = load_model(run_dir, device)
    task = task_view(meta)
    if examples is None:
        task = gdata.load_task(cfg.task, cfg.data)
        examples = eval_examples(task.eval, cfg.eval.max_examples)
    collate = make_collator(cfg, cfg.task, task, tok, model)
    scores: list = []
    amp = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=meta["precision"] == "bf16")
    with amp:
        preds = predict(model, examples, collate, batch_size or cfg.eval.batch_size, torch.device(device), "predict",
                        scores)
    rows = prediction_rows(examples, scores, meta["labels"])
    labelled = [(p, e) for p, e in zip(preds, examples, strict=True) if e.label >= 0]
    metrics = {}
    if labelled:
        metrics = task_metrics(list(cfg.task.get("metrics") or []), [p for p, _ in labelled],
                               [e.label for _, e in labelled], len(meta["labels"]), [e.group for _, e in labelled])
    return rows, metrics, cfg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gradft.trained.predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", help="a run's output folder (results.json, config.yaml, model/)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="a .jsonl/.json/.csv/.tsv file in the task's fields (labels optional)")
    src.add_argument("--eval", action="store_true", help="re-score the run's eval split; exit 1 unless its metrics "
                                                         "equal results.json's")
    ap.add_argument("--out", help="write predictions here (jsonl; default: stdout)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, help="default: the run's eval.batch_size")
    a = ap.parse_args(argv)

    run_dir = Path(a.run_dir)
    try:
        examples = None
        if a.input:
            examples = read_examples(a.input, OmegaConf.load(run_dir / "config.yaml"), load_meta(run_dir))
        rows, metrics, _ = score(run_dir, examples, a.device, a.batch_size)
    except (DataError, FileNotFoundError, ValueError) as e:
        print(f"gradft.trained.predict: error: {e}", file=sys.stderr)
        return 2
    if a.out:
        write_predictions(Path(a.out), rows)
    else:
        sys.stdout.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    what = "eval split" if a.eval else a.input
    line = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()) or "no gold labels: no accuracy"
    print(f"gradft.trained.predict: {len(rows)} examples of {what}: {line}" + (f" -> {a.out}" if a.out else ""),
          file=sys.stderr)
    if a.eval:
        ran = json.loads((run_dir / "results.json").read_text())["metrics"]
        diff = {k: (v, ran.get(k)) for k, v in metrics.items() if ran.get(k) != v}
        if diff:
            print(f"gradft.trained.predict: differs from results.json: {diff}", file=sys.stderr)
            return 1
        print("gradft.trained.predict: identical to results.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

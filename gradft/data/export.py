"""``python -m gradft.data.export [--out DIR] [task ...]`` (``make data``): the SuperGLUE local layout from the hub.

Owns `hub_rows_to_local`: hub rows (int ClassLabel labels; MultiRC flattened) back into the local jsonl schema that
`data.source=local` reads (`<out>/<Dir>/{train,val}.jsonl`, label values as in the task config). Needs network
access (or a datasets cache); the default `--out` is `data.superglue_root`. FewGLUE is not on the hub and not written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gradft import CONF_DIR

TASKS = ("boolq", "cb", "copa", "multirc", "rte", "wic")


def hub_rows_to_local(rows: list[dict[str, Any]], task: dict[str, Any]) -> list[dict[str, Any]]:
    """Hub schema -> local schema: labels back to the task's `labels` values; MultiRC answers nested by question."""
    values = task["labels"]
    if task["format"] != "multirc":
        return [{**r, "label": values[r["label"]] if r.get("label", -1) >= 0 else None} for r in rows]
    passages: dict[int, dict[str, Any]] = {}
    for r in rows:
        ids = r["idx"]
        p = passages.setdefault(ids["paragraph"], {"idx": ids["paragraph"], "version": 1.1,
                                                   "passage": {"text": r["paragraph"], "questions": []}})
        qs = p["passage"]["questions"]
        if not qs or qs[-1]["idx"] != ids["question"]:
            qs.append({"question": r["question"], "idx": ids["question"], "answers": []})
        qs[-1]["answers"].append({"text": r["answer"], "idx": ids["answer"], "label": values[r["label"]]})
    return list(passages.values())


def main(argv: list[str] | None = None) -> int:
    from omegaconf import OmegaConf

    import gradft  # noqa: F401  (the ${project_root:} resolver)

    data = OmegaConf.load(CONF_DIR / "config.yaml").data
    ap = argparse.ArgumentParser(prog="python -m gradft.data.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("tasks", nargs="*", default=list(TASKS))
    ap.add_argument("--out", default=str(data.superglue_root), help="default: data.superglue_root")
    ap.add_argument("--hub-id", default=str(data.hub_id))
    args = ap.parse_args(argv)
    import datasets

    for name in args.tasks:
        task = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "task" / f"{name}.yaml"))
        for hub_split, local in (("train", "train"), ("validation", "val")):
            try:
                rows = list(datasets.load_dataset(args.hub_id, task.get("hub_name") or name, split=hub_split))
            except Exception as exc:  # noqa: BLE001 - offline, unknown id: one line, the next split/task goes on
                print(f"gradft.data.export: {name} {hub_split}: {exc}", file=sys.stderr)
                return 2
            path = Path(args.out) / task["dir"] / f"{local}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in hub_rows_to_local(rows, task)))
            print(f"wrote {path} ({len(rows)} hub rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

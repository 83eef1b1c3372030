"""Look at a task before spending compute: ``python -m gradft.data task=<name> [shots=32] [--config-dir my_conf]``.

Owns `describe` (the text it prints): where the data came from (files + sha256, or hub), the split seed, what was
removed (filter, map_labels, duplicates), split sizes and label counts per split, one example as each head sees it
(the classifier's text pair; the LM head's rendered prompt and label word), the baselines on the eval split that
run() will report, and warnings (texts shared across splits, empty texts, a class too small for ``shots``).
"""

from __future__ import annotations

from typing import Any

from gradft.config.prompt import prompt_spec
from gradft.metrics import baselines

from .formats import Example, TaskData
from .prompting import candidates, render


def _table(task: TaskData) -> list[str]:
    splits = {"train_pool": task.train_pool, "select": task.select, "eval": task.eval}
    width = max(8, *(len(name) for name in task.labels))
    lines = [f"  {'split':<11}{'n':>7}  " + "  ".join(f"{name:>{width}}" for name in task.labels)]
    for role, exs in splits.items():
        counts = [sum(1 for e in exs if e.label == c) for c in range(len(task.labels))]
        lines.append(f"  {role:<11}{len(exs):>7}  " + "  ".join(f"{n:>{width}}" for n in counts))
    return lines


def _example_lines(task_cfg: Any, task: TaskData, ex: Example) -> list[str]:
    lines = ["one example (train_pool[0]):", "  head=classifier (a new head reads the text pair):"]
    if task.multiple_choice:
        lines += [f"    choice {i}: {c}" for i, c in enumerate(ex.choices)]
    else:
        lines += [f"    text_{'ab'[i]}: {t[:300]}" for i, t in enumerate(ex.texts)]
    lines.append(f"    label: {ex.label} ({task.labels[ex.label]})")
    if task_cfg.get("prompt") is None:
        return [*lines, "  head=lm: no `prompt:` in the task config (head=lm needs template + verbalizer)"]
    try:
        spec = prompt_spec(task_cfg, len(task.labels), task.multiple_choice)
        text = render(ex, spec)
        answer = repr(candidates(ex, spec)[ex.label]) if task.multiple_choice else repr(spec.verbalizer[ex.label])
    except (ValueError, KeyError) as exc:
        return [*lines, f"  head=lm: the prompt does not render: {exc}"]
    lines += ["  head=lm (the pretrained LM head scores the label words after this prompt):"]
    lines += [f"    | {line}" for line in text[:600].splitlines()]
    return [*lines, f"    answer: {answer}"]


def describe(task_cfg: Any, task: TaskData, shots: int, eval_cap: int | None = None, balance: str = "auto") -> str:
    """The inspection text; ``balance`` is the run's ``data.balance`` (strict refuses a short class before this)."""
    info = task.info
    out = [f"task {task.name}: {len(task.labels)} classes {task.labels}"
           + (" (inferred from the train pool, sorted)" if info.get("labels_inferred") else "")
           + f", source {info.get('source', '?')}"]
    for f in info.get("files", []):
        where = f.get("path") or f"hub {f.get('hub_id')}/{f.get('hub_name')} split {f.get('split')}"
        extra = f"  sha256 {f['sha256'][:16]}…" if f.get("sha256") else ""
        out.append(f"  {f.get('role', 'file')}: {where}{extra}"
                   + (f"  ({f['records']} records)" if f.get("records") is not None else ""))
    if info.get("split"):
        out.append(f"split: {info['split']}")
    removed = {k: v for k, v in (info.get("removed") or {}).items() if v}
    if removed:
        out.append("removed: " + ", ".join(f"{k} {v}" for k, v in removed.items()))
    out += ["sizes and label counts:", *_table(task)]
    if task.train_pool:
        out += _example_lines(task_cfg, task, task.train_pool[0])
    eval_set = task.eval[:eval_cap] if eval_cap else task.eval
    b = baselines([e.label for e in task.train_pool], [e.label for e in eval_set], len(task.labels))
    out += [f"baselines on eval ({len(eval_set)} examples), as results.json reports them:",
            f"  train-pool majority (predict the pool's most frequent class): {b['baseline_train_majority']:.1%} "
            f"accuracy, {b['baseline_train_majority_f1_macro']:.1%} macro-F1",
            f"  chance (1/{len(task.labels)}): {b['baseline_chance']:.1%}",
            f"  eval majority (the eval split's own most frequent class; needs eval labels): "
            f"{b['baseline_eval_majority']:.1%}"]
    warnings = list(info.get("warnings") or [])
    quota = shots // len(task.labels) if shots and balance != "none" else 0
    for c, name in enumerate(task.labels):
        n = sum(1 for e in task.train_pool if e.label == c)
        if n < quota:
            warnings.append(f"class {name!r} has {n} train-pool examples, fewer than shots={shots} // "
                            f"{len(task.labels)} = {quota}: balance={balance} gives its shortfall to the others")
    if shots > len(task.train_pool):
        warnings.append(f"shots={shots} > train pool {len(task.train_pool)}: the run will fail")
    seen = {e.texts for e in task.train_pool}
    shared = sum(1 for e in [*task.select, *task.eval] if e.texts and e.texts in seen)
    if shared and not any("leak" in w for w in warnings):
        warnings.append(f"{shared} select/eval examples have the same text as a train-pool example")
    empty = sum(1 for e in [*task.train_pool, *task.eval] if e.texts and not any(t.strip() for t in e.texts))
    if empty and not any("empty text" in w for w in warnings):
        warnings.append(f"{empty} examples have empty text")
    out += ["warnings:", *[f"  - {w}" for w in warnings]] if warnings else ["warnings: none"]
    return "\n".join(out)

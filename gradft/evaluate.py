"""Batched evaluation under no_grad: examples sorted by length (less padding), padded per batch, predictions put
back in the original order, then scored with the task's metrics. ``scores`` (a list to fill) receives each
example's per-class scores from the same pass (run.py writes them to predictions.jsonl: ``gradft.trained.save``).
Also owns which examples are scored (``eval_examples``: the ``eval.max_examples`` cap) and the batch builder of
each head (``make_collator``), shared by a run and ``gradft.trained.predict``."""

from __future__ import annotations

import logging
import time

import torch
from omegaconf import DictConfig
from torch import nn
from tqdm.auto import tqdm

from gradft.config.prompt import prompt_spec
from gradft.data import Collator, Example, TaskData
from gradft.data.prompting import PromptCollator
from gradft.forward import logits_of, to_device
from gradft.metrics import task_metrics
from gradft.models import head_kind

log = logging.getLogger(__name__)


def _length(ex: Example) -> int:
    return sum(len(t) for t in ex.texts) + sum(len(s) for c in ex.choices for s in c)


@torch.no_grad()
def predict(model: nn.Module, examples: list[Example], collate: Collator, batch_size: int,
            device: torch.device, desc: str = "eval", scores: list | None = None) -> list[int]:
    order = sorted(range(len(examples)), key=lambda i: _length(examples[i]))
    preds = [0] * len(examples)
    if scores is not None:
        scores[:] = [None] * len(examples)
    was_training = model.training
    model.eval()
    starts = range(0, len(order), batch_size)
    for s in tqdm(starts, desc=desc, leave=False, disable=None):
        idx = order[s : s + batch_size]
        batch = to_device(collate([examples[i] for i in idx]), device)
        logits = logits_of(model, batch)
        for i, p in zip(idx, logits.argmax(-1).tolist(), strict=True):
            preds[i] = p
        if scores is not None:
            for i, row in zip(idx, logits.tolist(), strict=True):
                scores[i] = row
    model.train(was_training)
    return preds


def evaluate(model: nn.Module, examples: list[Example], collate: Collator, batch_size: int, device: torch.device,
             metric_names: list[str], n_classes: int, desc: str = "eval",
             scores: list | None = None) -> dict[str, float]:
    t0 = time.perf_counter()
    log.info("%s: scoring %d examples", desc, len(examples))  # a long silence otherwise (BoolQ: minutes)
    preds = predict(model, examples, collate, batch_size, device, desc, scores)
    out = task_metrics(metric_names, preds, [e.label for e in examples], n_classes, [e.group for e in examples])
    log.info("%s: %s (%.1f s)", desc, ", ".join(f"{k} {v:.4f}" for k, v in out.items()), time.perf_counter() - t0)
    return out


def make_collator(cfg: DictConfig, task_cfg: DictConfig, task: TaskData, tok,
                  model) -> Collator | PromptCollator:
    """The batch builder for ``head``: text pairs for a classifier, prompts for the LM head. Prefix reuse needs a
    causal LM that takes position ids and a KV cache as given: not under peft prompt tuning (virtual tokens)."""
    if cfg.get("head", "classifier") == "classifier":
        return Collator(tok, cfg.model.max_length, task.multiple_choice)
    spec = prompt_spec(task_cfg, len(task.labels), task.multiple_choice)
    peft_cfg = getattr(model, "active_peft_config", None)
    reuse = bool(cfg.model.get("prefix_reuse", True)) and not getattr(peft_cfg, "is_prompt_learning", False)
    return PromptCollator(tok, spec.max_length or cfg.model.max_length, spec, head_kind(model), reuse)


def eval_examples(examples: list[Example], n: int | None) -> list[Example]:
    """``eval.max_examples``: the first n examples, extended to finish the last MultiRC question group (so exact
    match stays defined)."""
    if not n or n >= len(examples):
        return examples
    end = n
    while end < len(examples) and examples[end].group is not None and examples[end].group == examples[n - 1].group:
        end += 1
    return examples[:end]

"""In-context learning (``method=icl``, ``head=lm`` only): the k drawn shots as demonstrations in the prompt.

Owns the demonstrations: their order (the drawn shots shuffled by ``seed``: fixed per seed), their text (the task's own
template filled from the shot + its gold answer, the label word or the correct candidate, then a blank line), their
token ids, and how many of them fit before each eval example. A row is ``[lead special token] demo_1 … demo_n query``,
where the query is exactly zero-shot's row (``PromptCollator``: the same cut, label words, candidates, mask) and
``n`` the most demonstrations, taken in order, that fit the context (``method.context``, else the model's window:
``max_position_embeddings`` / the tokenizer's ``model_max_length``) after the query and its longest candidate: the
ones that do not fit are dropped from the end. Scoring is ``gradft.forward``'s, unchanged, so ICL, zero-shot and the
trained methods are scored alike. The count per eval example is recorded: results.json ``icl``.

Cost: the rows of a batch start with the same tokens (the lead token and the demonstrations that fit), so
``SharedPrefixLM`` (causal LMs) computes their KV cache once per run and runs only the rest of each row on top of it,
with position ids that continue after it: an eval costs one pass over the demonstrations plus the queries (each
attending to them), not (demonstrations + query) × examples. Scores equal full rows' to float rounding (tests).

The registry's ``apply`` (``gradft.methods``) does nothing: no parameter trains, no module is added.
"""

from __future__ import annotations

import copy
import logging
import random
from statistics import fmean
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from gradft.config.prompt import PromptSpec
from gradft.data import DataError, Example
from gradft.data.prompting import PromptCollator, candidates, render

log = logging.getLogger(__name__)

SEPARATOR = "\n\n"  # after each demonstration: the next one (or the query) starts on a line of its own


def is_icl(method_cfg: DictConfig | dict) -> bool:
    return method_cfg.get("kind", method_cfg.get("name")) == "icl"


def demo_order(shots: list[Example], seed: int) -> list[Example]:
    """The demonstrations' order: the drawn shots shuffled by ``seed`` (the run's seed; the draw is data_seed's)."""
    order = list(shots)
    random.Random(seed).shuffle(order)
    return order


def gold_answer(ex: Example, spec: PromptSpec) -> str:
    """The text that completes the shot's prompt: its class's label word, or its correct candidate."""
    return candidates(ex, spec)[ex.label] if spec.candidate else spec.verbalizer[ex.label]


def demo_text(ex: Example, spec: PromptSpec) -> str:
    return render(ex, spec) + gold_answer(ex, spec) + SEPARATOR


def context_of(model: Any, tok: Any, configured: int | None) -> int:
    """Tokens a row may hold: ``configured``, else the smaller of the model's position limit and the tokenizer's."""
    if configured:
        return int(configured)
    limits = [getattr(getattr(model, "config", None), "max_position_embeddings", None),
              getattr(tok, "model_max_length", None)]
    limits = [int(x) for x in limits if isinstance(x, int) and not isinstance(x, bool) and 0 < x < 1_000_000]
    if not limits:
        raise ValueError("method=icl: the model states no context window (max_position_embeddings); set "
                         "method.context=<tokens>")
    return min(limits)


class Demonstrations:
    """The demonstrations of one run, as token ids, and the number used in each row built so far (``used``)."""

    def __init__(self, tok: Any, shots: list[Example], spec: PromptSpec, context: int, seed: int):
        self.order = demo_order(shots, seed)
        self.texts = [demo_text(e, spec) for e in self.order]
        self.ids = [tok(t, add_special_tokens=False)["input_ids"] for t in self.texts]
        self.special = set(tok.all_special_ids)
        self.context = context
        self.used: list[int] = []

    def prepend(self, row: list[int], reserve: int = 0) -> list[int]:
        """``row`` (a zero-shot prompt row) with the demonstrations that fit in front of it, after its leading special
        token (BOS/CLS) if it has one; ``reserve``: tokens kept free for the candidates (multiple choice)."""
        lead = 1 if row and row[0] in self.special else 0
        room, n, total = self.context - len(row) - reserve, 0, 0
        for ids in self.ids:
            if total + len(ids) > room:
                break  # the first that does not fit, and every later one, are dropped
            total, n = total + len(ids), n + 1
        self.used.append(n)
        return row[:lead] + [t for ids in self.ids[:n] for t in ids] + row[lead:]

    def shared(self, ids: Tensor, mask: Tensor) -> int:
        """The length of the longest ``[lead] demo_1 … demo_n`` (n ≥ 1) that starts every row of the batch, with at
        least one real token after it in each row; 0 if none (e.g. no demonstration fits)."""
        row = ids[0].tolist()
        ends, s = [], 1 if row and row[0] in self.special else 0
        for d in self.ids:
            if row[s: s + len(d)] != d or s + len(d) >= len(row):
                break
            s += len(d)
            ends.append(s)
        for s in reversed(ends):
            if bool((ids[:, :s] == ids[:1, :s]).all()) and bool(mask[:, : s + 1].all()):
                return s
        return 0

    def reset(self) -> None:
        self.used = []

    def summary(self) -> dict[str, Any]:
        """results.json ``icl``: k, the context, demonstrations used per eval row (mean/min/max), their order."""
        u = self.used
        return {"k": len(self.ids), "context": self.context, "rows": len(u),
                "demos_mean": fmean(u) if u else None, "demos_min": min(u) if u else None,
                "demos_max": max(u) if u else None, "demo_tokens": sum(map(len, self.ids)),
                "order": [e.idx for e in self.order]}


class SharedPrefixLM(nn.Module):
    """A causal LM whose batches start with the demonstrations: their KV cache is computed once (per number of
    demonstrations) and each batch runs only the rest of its rows on a copy of it, positions continuing after it. A
    call that already brings a cache or position ids (prefix reuse's candidate pass), or whose rows share no
    demonstration, goes to the model unchanged. Under no_grad only (evaluation): nothing trains under icl."""

    MAX_CACHES = 2  # prefixes kept (each up to context × layers × 2 × kv width floats); one in the usual case

    def __init__(self, model: nn.Module, demos: Demonstrations):
        super().__init__()
        self.inner, self.demos = model, demos
        self.caches: dict[int, Any] = {}
        self.hits = 0  # batches that reused a cached prefix (tests)

    @property
    def config(self) -> Any:
        return self.inner.config

    def _prefix(self, ids: Tensor) -> Any:
        s = ids.shape[1]
        if s not in self.caches:
            if len(self.caches) >= self.MAX_CACHES:
                self.caches.pop(next(iter(self.caches)))
            out = self.inner(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, logits_to_keep=1)
            self.caches[s] = out.cache
        return self.caches[s]

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None, cache: Any = None, use_cache: bool | None = None,
                logits_to_keep: int | Tensor = 0, **kwargs: Any) -> Any:
        s = 0
        if cache is None and position_ids is None and input_ids is not None and attention_mask is not None:
            s = self.demos.shared(input_ids, attention_mask)
        if not s:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              cache=cache, use_cache=use_cache, logits_to_keep=logits_to_keep, **kwargs)
        b, n = input_ids.shape
        past = copy.deepcopy(self._prefix(input_ids[:1, :s]))
        past.batch_repeat_interleave(b)
        self.hits += 1
        positions = torch.arange(s, n, device=input_ids.device).expand(b, -1)
        # logits for positions s..n-1: callers count the positions they read from the end (logits_to_keep)
        return self.inner(input_ids=input_ids[:, s:], attention_mask=attention_mask, position_ids=positions,
                          cache=past, use_cache=True, logits_to_keep=logits_to_keep, **kwargs)


def attach(collate: PromptCollator, shots: list[Example], seed: int, model: nn.Module, tok: Any,
           context: int | None) -> tuple[Demonstrations, nn.Module]:
    """Make ``collate`` prepend the demonstrations of ``shots`` to every row it builds: (the demonstrations, for
    their counts; the model to evaluate: a causal LM shares their KV cache across the eval rows)."""
    if not isinstance(collate, PromptCollator):
        raise DataError("method=icl needs head=lm (prompt batches)")
    demos = Demonstrations(tok, shots, collate.spec, context_of(model, tok, context), seed)
    collate.demos = demos
    log.info("icl: %d demonstrations (%d tokens) in the order of seed=%d, rows of up to %d tokens", len(shots),
             sum(map(len, demos.ids)), seed, demos.context)
    return demos, SharedPrefixLM(model, demos) if collate.kind == "causal" else model


def apply(model: nn.Module, cfg: Any) -> nn.Module:
    return model

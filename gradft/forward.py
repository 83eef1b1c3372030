"""How a collated batch becomes logits and a task loss, for classification and multiple-choice tasks alike.

``head=classifier``: the model's new head gives the class logits. Multiple choice (COPA): the collator flattens
B examples × C choices into B·C rows and the model (``num_labels=1``) scores each row; the scores are reshaped to
(B, C) and the loss is cross-entropy over the choices.

``head=lm`` (batches from ``gradft.data.prompting.PromptCollator``): the pretrained LM head gives them. Verbalizer
batches: the logits of the label words at the answer position. Candidate batches: each candidate's mean token
log-probability given the prompt, (B, C). Methods, guidance and the gradient metrics only ever see ``task_loss``.
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import Tensor, nn


@functools.cache
def _forward_takes(cls: type, name: str) -> bool:
    return name in inspect.signature(cls.forward).parameters


def _takes_logits_to_keep(model: nn.Module) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wraps the HF model
    return _forward_takes(type(base), "logits_to_keep")


def _last_logits(model: nn.Module, keep: int, **inputs: Tensor):
    """The model output and the LM logits of the last ``keep`` positions of every row, (B, keep, V). Most causal LMs
    then apply the LM head to those positions only (``logits_to_keep``): a 49k-word head on every position is
    ~20% of SmolLM2's forward and a (B, L, V) tensor. Counting from the end also skips prompt tuning's virtual
    tokens, which peft prepends."""
    extra = {"logits_to_keep": keep} if _takes_logits_to_keep(model) else {}
    out = model(**inputs, **extra)
    return out, out.logits[:, -keep:]


def at_least_fp32(x: Tensor) -> Tensor:
    """Promote bf16/fp16 logits to fp32 for the loss; keep fp64 (a cast to fp32 capped float64 checks at ~1e-7)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _mean_logprob(pred: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Per row: mean over masked t of log softmax(pred[t])[targets[t]]. Only the masked positions are normalised
    (a log-softmax over the whole vocabulary at every position would cost B·C·L·V)."""
    sel = mask.bool()
    lp = at_least_fp32(pred[sel]).log_softmax(-1).gather(-1, targets[sel][:, None]).squeeze(-1)
    rows = sel.nonzero()[:, 0]
    total = torch.zeros(mask.shape[0], dtype=lp.dtype, device=lp.device).index_add(0, rows, lp)
    return total / mask.sum(1).clamp(min=1)


def _verbalizer_logits(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Label-word logits at each row's answer position. The LM head runs on the batch's distinct answer positions
    only (≤ B of them, counted from the end so prompt tuning's prepended virtual tokens do not shift them), not on
    every position from the earliest answer on: with right-padded prompts of mixed length that tail is most of L."""
    ids, answer = batch["input_ids"], batch["answer_index"]
    from_end = answer - ids.shape[1]  # -1 for the longest row
    rows = torch.arange(ids.shape[0], device=ids.device)
    if _takes_logits_to_keep(model):
        keep = from_end.unique()  # sorted
        logits = model(input_ids=ids, attention_mask=batch["attention_mask"], logits_to_keep=keep).logits
        col = torch.searchsorted(keep, from_end)
    else:  # e.g. a masked LM: every position, then the answer's
        logits = model(input_ids=ids, attention_mask=batch["attention_mask"]).logits
        col = from_end + logits.shape[1]
    return logits[rows, col][:, batch["label_token_ids"]]


def _candidate_scores(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Prompt + candidate rows: logits at t predict token t+1; scored where ``target_mask`` marks the candidate
    (keep = the positions from the one before the earliest candidate token on)."""
    ids, target = batch["input_ids"], batch["target_mask"]
    first = int(target.int().argmax(1).min())  # earliest candidate token over the rows (≥ 1: the prompt is first)
    _, logits = _last_logits(model, ids.shape[1] - first + 1, input_ids=ids, attention_mask=batch["attention_mask"])
    return _mean_logprob(logits[:, :-1], ids[:, first:], target[:, first:])


def _candidate_scores_reuse(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """The prompt runs once per example; its KV cache is repeated for the C candidates (prefix reuse)."""
    c = int(batch["n_choices"])
    pmask, cand, cmask = batch["prefix_mask"], batch["input_ids"], batch["attention_mask"]
    plen, p = pmask.sum(1), pmask.shape[1]
    keep = p - int(plen.min()) + 1
    out, last = _last_logits(model, keep, input_ids=batch["prefix_ids"], attention_mask=pmask, use_cache=True)
    first = last[torch.arange(len(plen), device=plen.device), plen - 1 - (p - keep)]  # predicts candidate token 0
    cache = out.cache  # transformers ≥ 5.2x: `cache` (formerly past_key_values)
    cache.batch_repeat_interleave(c)
    positions = plen.repeat_interleave(c)[:, None] + torch.arange(cand.shape[1], device=cand.device)
    nxt = model(input_ids=cand, attention_mask=torch.cat([pmask.repeat_interleave(c, 0), cmask], 1),
                position_ids=positions, cache=cache).logits
    pred = torch.cat([first.repeat_interleave(c, 0)[:, None], nxt[:, :-1]], 1)
    return _mean_logprob(pred, cand, cmask)


def logits_of(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """(B, C) class logits or candidate scores of a collated batch."""
    if "label_token_ids" in batch:
        return at_least_fp32(_verbalizer_logits(model, batch))
    if "prefix_ids" in batch:
        return _candidate_scores_reuse(model, batch).view(-1, int(batch["n_choices"]))
    if "target_mask" in batch:
        return _candidate_scores(model, batch).view(-1, int(batch["n_choices"]))
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "n_choices")}
    logits = model(**inputs).logits
    if "n_choices" in batch:
        logits = logits.view(-1, int(batch["n_choices"]))
    return at_least_fp32(logits)


def task_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Mean cross-entropy of the batch: the paper's L_base."""
    return nn.functional.cross_entropy(logits_of(model, batch), batch["labels"])


SHARED_KEYS = ("label_token_ids", "n_choices")  # per batch, not per example
PER_EXAMPLE_KEYS = ("labels", "prefix_ids", "prefix_mask", "answer_index")  # one row per example even with choices


def n_examples(batch: dict[str, Tensor]) -> int:
    return int(batch["labels"].shape[0])


def slice_examples(batch: dict[str, Tensor], lo: int, hi: int) -> dict[str, Tensor]:
    """Examples lo..hi of a collated batch, any layout: multiple-choice rows (B·C) are cut per example (C rows)."""
    c = int(batch["n_choices"]) if "n_choices" in batch else 1
    out = {}
    for k, v in batch.items():
        if k in SHARED_KEYS:
            out[k] = v
        elif k in PER_EXAMPLE_KEYS or c == 1:
            out[k] = v[lo:hi]
        else:
            out[k] = v[lo * c : hi * c]
    return out


def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def set_gradient(model: nn.Module, space, batches: list[dict[str, Tensor]], device: torch.device) -> Tensor:
    """∇ of the mean loss over a whole example set (e.g. the k-shot training set), in eval mode (no dropout),
    as a flat vector of ``space`` (a ``gradft.gradients.ParamSpace``). Batch losses are weighted by size."""
    was_training = model.training
    model.eval()
    total = sum(int(b["labels"].shape[0]) for b in batches)
    g = None
    with space.requiring_grad():
        for b in batches:
            b = to_device(b, device)
            gi = space.grad(task_loss(model, b) * (int(b["labels"].shape[0]) / total))
            g = gi if g is None else g + gi
    model.train(was_training)
    return g

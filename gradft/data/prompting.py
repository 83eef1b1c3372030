"""Prompt-based few-shot through the pretrained LM head (``head=lm``): templates, verbalizers, candidates, batches.

Owns rendering an ``Example`` into text, telling a causal
from a masked LM, and ``PromptCollator``, which turns Examples into the batches that ``gradft.forward`` scores:

- verbalizer tasks (BoolQ, CB, RTE, WiC, MultiRC): one row per example, right-padded; ``answer_index`` is the
  position whose next-token (causal) or mask (masked LM) distribution is read, ``label_token_ids`` the first token of
  each label word. The logits of the label words are the class logits: cross-entropy over them is the loss.
- candidate tasks (COPA): every candidate continuation is scored by its mean token log-likelihood under the LM
  (length-normalised). Without prefix reuse each row is prompt + candidate (B·C rows, ``target_mask`` marks the
  candidate tokens). With prefix reuse the prompt is run once per example (B rows, ``prefix_ids``) and its KV cache is
  repeated for the C candidate rows: the prompt's tokens are computed once instead of C times.
- ``method=icl``: ``demos`` (``gradft.methods.icl``) puts the k shots, with their gold answers, before each prompt row.

Causal rows are right-padded: with a causal mask, padding after the last real token changes nothing before it, and
positions 0..n-1 stay those of the unpadded text. With prefix reuse the candidate rows get explicit position ids
(prefix length + t), and the attention mask hides the prefix's padding, so both paths give the same scores
(``tests/test_prompting.py`` pins it).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES as MASKED

from gradft.config.prompt import PromptSpec
from gradft.data.formats import DataError, Example

__all__ = ["LM_KINDS", "PromptCollator", "candidates", "fields_of", "lm_kind_of", "render"]

LM_KINDS = ("causal", "masked")


def _lc_first(s: str) -> str:
    return s[:1].lower() + s[1:]


def fields_of(ex: Example, spec: PromptSpec) -> dict[str, str]:
    """The example's raw fields plus derived ones: ``premise_stem`` (no final punctuation), ``connective``."""
    f = ex.field_map
    if "premise" in f:
        f["premise_stem"] = f["premise"].rstrip().rstrip(".!?")
    if spec.connective and "question" in f:
        f["connective"] = spec.connective.get(f["question"], f["question"])
    return f


def render(ex: Example, spec: PromptSpec) -> str:
    """The prompt text: ``spec.template`` filled from the example's fields."""
    f = fields_of(ex, spec)
    try:
        return spec.template.format_map(f)
    except KeyError as e:
        raise DataError(f"task.prompt.template uses {{{e.args[0]}}}, but example {ex.idx!r} has only the fields "
                        f"{sorted(f)}") from None


def candidates(ex: Example, spec: PromptSpec) -> list[str]:
    """Each answer candidate as a continuation of the prompt (fields choice1, choice2, ...)."""
    f = ex.field_map
    out = []
    while f"choice{len(out) + 1}" in f:
        c = f[f"choice{len(out) + 1}"]
        out.append(spec.candidate.format(choice=c, choice_lc=_lc_first(c)))
    if len(out) < 2:
        raise DataError(f"example {ex.idx!r} has fewer than 2 choices (fields {sorted(f)})")
    return out


def lm_kind_of(architectures: list[str] | None, configured: str, model_type: str = "",
               is_decoder: bool = False) -> str:
    """``configured`` (causal | masked) or, for ``auto``, what the checkpoint's config says: its architecture name
    (``…ForMaskedLM`` / ``…ForCausalLM``), else which LM heads transformers has for its model type (BERT-likes have
    both: masked unless the config is a decoder)."""
    if configured in LM_KINDS:
        return configured
    if configured != "auto":
        raise ValueError(f"model.lm_kind={configured!r}: must be auto, causal or masked")
    names = " ".join(architectures or [])
    if "MaskedLM" in names or "ForPreTraining" in names:
        return "masked"
    if "CausalLM" in names or "LMHeadModel" in names:
        return "causal"

    return "masked" if model_type in MASKED and not is_decoder else "causal"


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest row: (ids, attention mask)."""
    n = max(len(r) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


class PromptCollator:
    """Examples -> LM-scoring batches (see the module docstring for the three layouts)."""

    def __init__(self, tokenizer: Any, max_length: int, spec: PromptSpec, lm_kind: str, reuse_prefix: bool = False):
        if max_length <= 1:
            raise DataError(f"max_length must be > 1, got {max_length}")
        if lm_kind not in LM_KINDS:
            raise ValueError(f"lm_kind={lm_kind!r}: must be one of {LM_KINDS}")
        if lm_kind == "masked" and spec.candidate:
            raise ValueError("candidate scoring (multiple choice, e.g. COPA) needs a causal LM: a masked LM has no "
                             "left-to-right likelihood; use a causal model or head=classifier")
        if lm_kind == "masked" and tokenizer.mask_token is None:
            raise DataError("lm_kind=masked, but the tokenizer has no mask token")
        self.tok, self.max_length, self.spec, self.kind = tokenizer, max_length, spec, lm_kind
        self.reuse_prefix = reuse_prefix and lm_kind == "causal"
        self.demos = None  # method=icl: a gradft.methods.icl.Demonstrations, prepended to every prompt row
        self.multiple_choice = bool(spec.candidate)
        self.label_token_ids = torch.tensor([self._first_token(w) for w in spec.verbalizer], dtype=torch.long)
        if len(set(self.label_token_ids.tolist())) != len(spec.verbalizer):
            raise ValueError(f"task.prompt.verbalizer={spec.verbalizer!r}: the label words must start with "
                             "different tokens")

    def _first_token(self, word: str) -> int:
        # " Yes" keeps its space: a BPE tokenizer (GPT-2, Llama, RoBERTa) marks word starts with it, WordPiece drops it
        ids = self.tok(word, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"task.prompt.verbalizer word {word!r} is empty after tokenisation")
        return ids[0]  # multi-token words are scored by their first token (as PET does)

    def _ids(self, text: str, budget: int, special: bool = True) -> list[int]:
        """Token ids of text, cut to ``budget`` by dropping tokens after the leading special token (keeps the
        end of the prompt, where the question and the answer slot are)."""
        ids = self.tok(text, add_special_tokens=special)["input_ids"]
        while self.kind == "causal" and len(ids) > 1 and ids[-1] in self.tok.all_special_ids:
            ids = ids[:-1]  # a causal prompt ends where the answer starts: no trailing EOS/SEP
        if len(ids) <= budget:
            return ids
        lead = 1 if special and ids[0] in self.tok.all_special_ids else 0
        return ids[:lead] + ids[len(ids) - (budget - lead):]

    def _with_demos(self, row: list[int], reserve: int = 0) -> list[int]:
        """The row as zero-shot has it, or (method=icl) with the demonstrations that fit before it."""
        return row if self.demos is None else self.demos.prepend(row, reserve)

    def __call__(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        if not examples:
            raise DataError("cannot collate an empty batch")
        labels = torch.tensor([ex.label for ex in examples], dtype=torch.long)
        if self.multiple_choice:
            return {**self._candidates(examples), "labels": labels}
        texts = [render(ex, self.spec) + (" " + self.tok.mask_token if self.kind == "masked" else "")
                 for ex in examples]
        rows = [self._with_demos(self._ids(t, self.max_length)) for t in texts]
        ids, mask = _pad(rows, self.tok.pad_token_id)
        if self.kind == "causal":
            answer = mask.sum(1) - 1  # the last prompt token predicts the label word
        else:
            is_mask = ids == self.tok.mask_token_id
            if not bool((is_mask.sum(1) == 1).all()):
                raise DataError("each masked-LM prompt needs exactly one mask token (does the template contain one?)")
            answer = is_mask.int().argmax(1)
        return {"input_ids": ids, "attention_mask": mask, "answer_index": answer,
                "label_token_ids": self.label_token_ids.clone(), "labels": labels}

    def _candidates(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        cands = [[self._ids(c, self.max_length // 2, special=False) for c in candidates(ex, self.spec)]
                 for ex in examples]
        n = len(cands[0])
        if any(len(c) != n for c in cands):
            raise DataError("multiple-choice batch needs the same number of candidates per example")
        longest = [max(len(c) for c in cs) for cs in cands]
        prefixes = [self._with_demos(self._ids(render(ex, self.spec), self.max_length - m), m)
                    for ex, m in zip(examples, longest, strict=True)]
        pad = self.tok.pad_token_id
        flat = [c for cs in cands for c in cs]
        if self.reuse_prefix:  # B prompt rows + B·C candidate rows
            prefix_ids, prefix_mask = _pad(prefixes, pad)
            cand_ids, cand_mask = _pad(flat, pad)
            return {"prefix_ids": prefix_ids, "prefix_mask": prefix_mask, "input_ids": cand_ids,
                    "attention_mask": cand_mask, "n_choices": torch.tensor(n)}
        rows = [p + c for p, cs in zip(prefixes, cands, strict=True) for c in cs]
        ids, mask = _pad(rows, pad)
        target = torch.zeros_like(mask)
        for i, (p, c) in enumerate((p, c) for p, cs in zip(prefixes, cands, strict=True) for c in cs):
            target[i, len(p): len(p) + len(c)] = 1
        return {"input_ids": ids, "attention_mask": mask, "target_mask": target, "n_choices": torch.tensor(n)}

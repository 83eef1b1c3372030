"""Tokenisation and batching of `Example`s.

Owns `Collator` (dynamic padding to the longest sequence in the batch; multiple-choice batches are
flattened from B x C choices into B*C rows plus a 0-dim `n_choices`) and `iterate_batches`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import torch

from .formats import DataError, Example


class Collator:
    """Turns a list of Examples into model inputs: input_ids, attention_mask, [token_type_ids], labels."""

    def __init__(self, tokenizer: Any, max_length: int, multiple_choice: bool) -> None:
        if getattr(tokenizer, "pad_token", None) is None:
            raise DataError(
                "tokenizer has no pad token; set one before collating (e.g. tokenizer.pad_token = "
                "tokenizer.eos_token, as the model loader does)"
            )
        if max_length <= 0:
            raise DataError(f"max_length must be positive, got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.multiple_choice = multiple_choice

    def _segments(self, examples: list[Example]) -> tuple[list[tuple[str, ...]], int]:
        if not self.multiple_choice:
            return [ex.texts for ex in examples], 1
        n = len(examples[0].choices)
        if n == 0 or any(len(ex.choices) != n for ex in examples):
            counts = sorted({len(ex.choices) for ex in examples})
            raise DataError(f"multiple-choice batch needs the same, non-zero number of choices; got {counts}")
        return [seg for ex in examples for seg in ex.choices], n

    def __call__(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        if not examples:
            raise DataError("cannot collate an empty batch")
        segments, n_choices = self._segments(examples)
        lengths = {len(s) for s in segments}
        if len(lengths) != 1 or not lengths <= {1, 2}:
            kind = "segments per choice" if self.multiple_choice else "texts (0 = a multiple-choice example?)"
            raise DataError(
                f"every example in a batch needs the same number (1 or 2) of {kind}; got {sorted(lengths)}"
            )
        text_a = [s[0] for s in segments]
        text_b = [s[1] for s in segments] if lengths == {2} else None
        enc = self.tokenizer(
            text_a,
            text_b,
            truncation=True,
            max_length=self.max_length,
            padding="longest",
            return_tensors="pt",
        )
        batch = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        batch["labels"] = torch.tensor([ex.label for ex in examples], dtype=torch.long)
        if self.multiple_choice:
            batch["n_choices"] = torch.tensor(n_choices, dtype=torch.long)
        return batch


def iterate_batches(
    examples: list[Example], batch_size: int, collate: Collator, shuffle: bool, seed: int = 0
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield collated batches of `batch_size` (the last, partial batch is kept); shuffled by `seed`."""
    if batch_size <= 0:
        raise DataError(f"batch_size must be positive, got {batch_size}")
    order = list(range(len(examples)))
    if shuffle:
        random.Random(seed).shuffle(order)
    for start in range(0, len(order), batch_size):
        yield collate([examples[i] for i in order[start : start + batch_size]])

"""LoRA through peft: low-rank updates B·A on the attention projections; the new head (if any) trains in full.

peft's own defaults pick the target modules per architecture (query/value for BERT, q_proj/v_proj for Llama)
unless ``target_modules`` is set. B starts at zero, so the model is unchanged at step 0 — and the gradient with
respect to A is exactly zero there (see docs/metrics.md on what that means for a step-0 reference direction).
"""

from __future__ import annotations

from dataclasses import dataclass

from peft import LoraConfig, TaskType, get_peft_model
from torch import nn


@dataclass
class LoraMethodConfig:
    name: str = "lora"
    lr: float = 5e-4
    r: int = 8
    alpha: float = 16
    dropout: float = 0.0
    target_modules: list[str] | None = None

    def __post_init__(self) -> None:
        from gradft.methods import check_positive

        check_positive("method", lr=self.lr, r=self.r, alpha=self.alpha)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"method.dropout={self.dropout!r}: must be in [0, 1)")


def apply(model: nn.Module, cfg: LoraMethodConfig) -> nn.Module:
    from gradft.methods import peft_task_type

    return get_peft_model(
        model,
        LoraConfig(
            task_type=TaskType[peft_task_type(model)], r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
            target_modules=cfg.target_modules,
        ),
    )

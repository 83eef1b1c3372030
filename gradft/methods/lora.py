"""LoRA through peft: low-rank updates B·A on the attention projections; the new head (if any) trains in full.

peft's own defaults pick the target modules per architecture (query/value for BERT, q_proj/v_proj for Llama)
unless ``target_modules`` is set. B starts at zero, so the model is unchanged at step 0 — and the gradient with
respect to A is exactly zero there (see docs/metrics.md on what that means for a step-0 reference direction).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from peft import LoraConfig, TaskType, get_peft_model

from gradft.config.method import LoraMethodConfig
from gradft.models import peft_task_type

if TYPE_CHECKING:
    from torch import nn

__all__ = ["LoraMethodConfig", "apply"]


def apply(model: nn.Module, cfg: LoraMethodConfig) -> nn.Module:
    return get_peft_model(
        model,
        LoraConfig(
            task_type=TaskType[peft_task_type(model)], r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
            target_modules=cfg.target_modules,
        ),
    )

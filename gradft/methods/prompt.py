"""Prompt tuning through peft: n trainable virtual-token embeddings prepended to the input; a new classifier head
trains, an LM head (``head=lm``) stays frozen.

Initialisation is RANDOM: peft's TEXT initialisation downloads a tokenizer from the hub, which fails offline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

from gradft.config.method import PromptConfig
from gradft.models import peft_task_type

if TYPE_CHECKING:
    from torch import nn

__all__ = ["PromptConfig", "apply"]


def apply(model: nn.Module, cfg: PromptConfig) -> nn.Module:
    return get_peft_model(
        model,
        PromptTuningConfig(
            task_type=TaskType[peft_task_type(model)], num_virtual_tokens=cfg.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.RANDOM,
        ),
    )

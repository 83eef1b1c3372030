"""Prompt tuning through peft: n trainable virtual-token embeddings prepended to the input; a new classifier head
trains, an LM head (``head=lm``) stays frozen.

Initialisation is RANDOM: peft's TEXT initialisation downloads a tokenizer from the hub, which fails offline.
"""

from __future__ import annotations

from dataclasses import dataclass

from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
from torch import nn


@dataclass
class PromptConfig:
    name: str = "prompt"
    lr: float = 3e-2
    num_virtual_tokens: int = 20

    def __post_init__(self) -> None:
        from gradft.methods import check_positive

        check_positive("method", lr=self.lr, num_virtual_tokens=self.num_virtual_tokens)


def apply(model: nn.Module, cfg: PromptConfig) -> nn.Module:
    from gradft.methods import peft_task_type

    return get_peft_model(
        model,
        PromptTuningConfig(
            task_type=TaskType[peft_task_type(model)], num_virtual_tokens=cfg.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.RANDOM,
        ),
    )

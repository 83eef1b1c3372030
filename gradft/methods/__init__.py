"""The fine-tuning methods, registered in one place.

A method decides *which* parameters train (and adds the modules they live in); guidance (``gradft.guidance``)
decides *how* the update is computed from the loss. Each method is a module with a config dataclass that validates
itself and an ``apply(model, cfg) -> model`` that freezes, wraps or adds parameters. ``method=ours`` is LoRA plus
``guidance=structured`` (see ``conf/method/ours.yaml``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from gradft.methods import adapter, full, lora, prompt

# name -> (config dataclass, apply function)
METHODS: dict[str, tuple[type, Callable[[nn.Module, Any], nn.Module]]] = {
    "full": (full.FullConfig, full.apply),
    "adapter": (adapter.AdapterConfig, adapter.apply),
    "lora": (lora.LoraMethodConfig, lora.apply),
    "prompt": (prompt.PromptConfig, prompt.apply),
}


def method_config(cfg: DictConfig) -> Any:
    """The validated dataclass for a ``conf/method/*.yaml`` node (its ``kind`` names the implementation)."""
    kind = cfg.get("kind", cfg.get("name"))
    if kind not in METHODS:
        raise ValueError(f"method.kind='{kind}' is not one of: {', '.join(sorted(METHODS))}")
    cls = METHODS[kind][0]
    values = OmegaConf.to_container(cfg, resolve=True)
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


def apply_method(model: nn.Module, cfg: DictConfig) -> nn.Module:
    mcfg = method_config(cfg)
    return METHODS[cfg.get("kind", cfg.get("name"))][1](model, mcfg)


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def peft_task_type(model: nn.Module) -> str:
    """peft's task type for the model's head: SEQ_CLS (new classifier, trained via modules_to_save), CAUSAL_LM (prompt
    tuning prepends virtual tokens, LM head frozen), FEATURE_EXTRACTION (masked LM: plain forward, head frozen)."""
    from gradft.models import head_kind

    return {"classifier": "SEQ_CLS", "causal": "CAUSAL_LM", "masked": "FEATURE_EXTRACTION"}[head_kind(model)]


def check_positive(owner: str, **values: float) -> None:
    """Shared validation: every value must be a number > 0 (``ValueError`` names the key and the value)."""
    for key, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ValueError(f"{owner}.{key}={v!r}: must be a number > 0")

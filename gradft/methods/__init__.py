"""The fine-tuning methods, registered in one place.

A method decides *which* parameters train (and adds the modules they live in); guidance (``gradft.guidance``)
decides *how* the update is computed from the loss. Each method has a config dataclass that validates itself
(``gradft.config.method``: torch-free, so a bad value fails before torch is imported) and a module with an
``apply(model, cfg) -> model`` that freezes, wraps or adds parameters (imported only when a model is built).
``method=ours`` is LoRA plus ``guidance=structured`` (see ``conf/method/ours.yaml``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from gradft.config.method import CONFIGS, method_config

if TYPE_CHECKING:
    from torch import nn

# name -> (config dataclass, module with its ``apply``); the module (torch, peft) is imported only when applied
METHODS: dict[str, tuple[type, str]] = {name: (cls, f"gradft.methods.{name}") for name, cls in CONFIGS.items()}


def method_apply(kind: str) -> Callable[[nn.Module, Any], nn.Module]:
    """The ``apply(model, cfg)`` of a method kind (imports its module)."""
    return importlib.import_module(METHODS[kind][1]).apply


def apply_method(model: nn.Module, cfg: DictConfig) -> nn.Module:
    mcfg = method_config(cfg)
    return method_apply(cfg.get("kind", cfg.get("name")))(model, mcfg)


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]

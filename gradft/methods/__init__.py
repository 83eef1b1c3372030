"""The fine-tuning methods, registered in one place.

A method decides *which* parameters train (and adds the modules they live in); guidance (``gradft.guidance``)
decides *how* the update is computed from the loss. Each method has a config dataclass that validates itself
(``gradft.methods.config``: torch-free, so a bad value fails before torch is imported) and a module with an
``apply(model, cfg) -> model`` that freezes, wraps or adds parameters (imported only when a model is built).
``method=ours`` is LoRA plus ``guidance=structured`` (see ``conf/method/ours.yaml``).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from gradft.methods.config import CONFIGS

if TYPE_CHECKING:
    from torch import nn

# name -> (config dataclass, module with its ``apply``); the module (torch, peft) is imported only when applied
METHODS: dict[str, tuple[type, str]] = {name: (cls, f"gradft.methods.{name}") for name, cls in CONFIGS.items()}


def method_apply(kind: str) -> Callable[[nn.Module, Any], nn.Module]:
    """The ``apply(model, cfg)`` of a method kind (imports its module)."""
    return importlib.import_module(METHODS[kind][1]).apply


def method_config(cfg: DictConfig) -> Any:
    """The validated dataclass for a ``conf/method/*.yaml`` node (its ``kind`` names the implementation)."""
    kind = cfg.get("kind", cfg.get("name"))
    if kind not in METHODS:
        raise ValueError(f"method.kind='{kind}' is not one of: {', '.join(sorted(METHODS))}")
    cls = METHODS[kind][0]
    values = OmegaConf.to_container(cfg, resolve=True)
    known = {f.name for f in fields(cls)}
    for key in set(values) - known - {"kind"}:  # a typo or another method's key would otherwise be ignored
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f"; did you mean method.{close[0]}?" if close else f" (method {kind} has: {', '.join(sorted(known))})"
        raise ValueError(f"method.{key}: not a key of method {kind}{hint}")
    return cls(**{k: v for k, v in values.items() if k in known})


def apply_method(model: nn.Module, cfg: DictConfig) -> nn.Module:
    mcfg = method_config(cfg)
    return method_apply(cfg.get("kind", cfg.get("name")))(model, mcfg)


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]

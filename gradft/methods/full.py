"""Full fine-tuning: every weight trains (the backbone and the new head)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gradft.config.method import FullConfig

if TYPE_CHECKING:
    from torch import nn

__all__ = ["FullConfig", "apply"]


def apply(model: nn.Module, cfg: FullConfig) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model

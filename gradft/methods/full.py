"""Full fine-tuning: every weight trains (the backbone and the new head)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class FullConfig:
    name: str = "full"
    lr: float = 2e-5

    def __post_init__(self) -> None:
        from gradft.methods import check_positive

        check_positive("method", lr=self.lr)


def apply(model: nn.Module, cfg: FullConfig) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model

"""Bottleneck adapters (Houlsby et al., 2019): after each block's attention-output and FFN-output projection,
y ← y + W_up·act(W_down·y), with W_up = 0 at init so the model starts unchanged. The backbone is frozen; the
adapters, the LayerNorms and the new head train (as in Houlsby).

peft has no bottleneck adapters, and the ``adapters`` package pins transformers 4.x: these ~40 lines replace both.
They are plain modules, so double backward works through them.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from gradft.config.method import AdapterConfig
from gradft.models import head_parameter_names

__all__ = ["AdapterConfig", "Adapted", "apply"]


class Adapted(nn.Module):
    """A linear layer followed by a residual bottleneck adapter (identity at init)."""

    def __init__(self, base: nn.Linear, bottleneck: int):
        super().__init__()
        self.base = base
        d = base.out_features
        self.down = nn.Linear(d, bottleneck, dtype=base.weight.dtype, device=base.weight.device)
        self.up = nn.Linear(bottleneck, d, dtype=base.weight.dtype, device=base.weight.device)
        nn.init.normal_(self.down.weight, std=1e-2)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        return y + self.up(nn.functional.gelu(self.down(y)))


def apply(model: nn.Module, cfg: AdapterConfig) -> nn.Module:
    head = head_parameter_names(model)
    for n, p in model.named_parameters():
        p.requires_grad_(n in head or (cfg.train_layernorm and "norm" in n.lower()))
    pattern = re.compile(cfg.targets)
    targets = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and pattern.search(n)]
    if not targets:
        raise ValueError(f"method.targets={cfg.targets!r} matches no linear layer of {type(model).__name__}")
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, Adapted(getattr(parent, child), cfg.bottleneck))
    return model

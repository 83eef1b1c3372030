"""``method=icl``: in-context learning applies nothing to the model (no parameter trains, no module is added); the
demonstrations are built by ``gradft.icl`` and read through the prompt. ``apply`` exists for the registry only."""

from __future__ import annotations

from typing import Any

from torch import nn


def apply(model: nn.Module, cfg: Any) -> nn.Module:
    return model

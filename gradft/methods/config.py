"""The methods' config dataclasses: what each ``conf/method/*.yaml`` may set, validated on construction.

Torch-free on purpose: ``gradft.config.schema.validate`` builds them before torch, peft or transformers are imported,
so a
bad method value fails in about a second. The implementations (``apply``) live in the method modules.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# attention-output and FFN-output projections of BERT-like and Llama-like blocks
DEFAULT_TARGETS = r"(attention\.output\.dense|layer\.\d+\.output\.dense|o_proj|down_proj)$"


def check_positive(owner: str, **values: float) -> None:
    """Every value must be a finite number > 0 (``ValueError`` names the key and the value; NaN and inf fail)."""
    for key, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise ValueError(f"{owner}.{key}={v!r}: must be a finite number > 0")


def check_int(owner: str, **values: int) -> None:
    """Every value must be an integer ≥ 1."""
    for key, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{owner}.{key}={v!r}: must be an integer ≥ 1")


@dataclass
class FullConfig:
    name: str = "full"
    lr: float = 2e-5

    def __post_init__(self) -> None:
        check_positive("method", lr=self.lr)


@dataclass
class AdapterConfig:
    name: str = "adapter"
    lr: float = 1e-3
    bottleneck: int = 32
    targets: str = DEFAULT_TARGETS
    train_layernorm: bool = True

    def __post_init__(self) -> None:
        check_positive("method", lr=self.lr)
        check_int("method", bottleneck=self.bottleneck)
        try:
            re.compile(self.targets)
        except (re.error, TypeError) as e:
            raise ValueError(f"method.targets={self.targets!r}: not a regular expression ({e})") from None


@dataclass
class LoraMethodConfig:
    name: str = "lora"
    lr: float = 5e-4
    r: int = 8
    alpha: float = 16
    dropout: float = 0.0
    target_modules: list[str] | None = None

    def __post_init__(self) -> None:
        check_positive("method", lr=self.lr, alpha=self.alpha)
        check_int("method", r=self.r)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"method.dropout={self.dropout!r}: must be in [0, 1)")


@dataclass
class PromptConfig:
    name: str = "prompt"
    lr: float = 3e-2
    num_virtual_tokens: int = 20

    def __post_init__(self) -> None:
        check_positive("method", lr=self.lr)
        check_int("method", num_virtual_tokens=self.num_virtual_tokens)


@dataclass
class IclConfig:
    """In-context learning (``gradft.methods.icl``): no parameter trains; the k shots are
    demonstrations in the prompt."""
    name: str = "icl"
    context: int | None = None  # tokens per row, demonstrations included (null: the model's context window)
    eval_batch_size: int = 4  # rows of up to `context` tokens: eval.batch_size (64) of them would not fit in memory

    def __post_init__(self) -> None:
        check_int("method", eval_batch_size=self.eval_batch_size)
        if self.context is not None:
            check_int("method", context=self.context)


CONFIGS: dict[str, type] = {"full": FullConfig, "adapter": AdapterConfig, "lora": LoraMethodConfig,
                            "prompt": PromptConfig, "icl": IclConfig}

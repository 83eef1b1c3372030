"""The methods' config dataclasses: what each ``conf/method/*.yaml`` may set, validated on construction, and
``method_config(node)`` that builds the one a node names (its ``kind``).

The defaults live in the yaml only: no field has a default value, and ``method_node(name, **overrides)`` reads
``conf/method/<name>.yaml`` for code that runs without Hydra. Torch-free on purpose: ``gradft.config.schema.validate``
builds them before torch, peft or transformers are imported, so a bad method value fails in about a second. The
implementations (``apply``) live in the method modules (``gradft.methods``).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gradft import CONF_DIR
from gradft.config.nodes import number


@dataclass
class FullConfig:
    name: str
    lr: float

    def __post_init__(self) -> None:
        number("method.lr", self.lr)


@dataclass
class AdapterConfig:
    name: str
    lr: float
    bottleneck: int
    targets: str
    train_layernorm: bool

    def __post_init__(self) -> None:
        number("method.lr", self.lr)
        number("method.bottleneck", self.bottleneck, integer=True, minimum=1, strict=False)
        try:
            re.compile(self.targets)
        except (re.error, TypeError) as e:
            raise ValueError(f"method.targets={self.targets!r}: not a regular expression ({e})") from None


@dataclass
class LoraMethodConfig:
    name: str
    lr: float
    r: int
    alpha: float
    dropout: float
    target_modules: list[str] | None

    def __post_init__(self) -> None:
        number("method.lr", self.lr)
        number("method.alpha", self.alpha)
        number("method.r", self.r, integer=True, minimum=1, strict=False)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"method.dropout={self.dropout!r}: must be in [0, 1)")


@dataclass
class PromptConfig:
    name: str
    lr: float
    num_virtual_tokens: int

    def __post_init__(self) -> None:
        number("method.lr", self.lr)
        number("method.num_virtual_tokens", self.num_virtual_tokens, integer=True, minimum=1, strict=False)


@dataclass
class IclConfig:
    """In-context learning (``gradft.methods.icl``): no parameter trains; the k shots are
    demonstrations in the prompt."""

    name: str
    context: int | None  # tokens per row, demonstrations included (null: the model's context window)
    eval_batch_size: int  # rows of up to `context` tokens: eval.batch_size (64) of them would not fit in memory

    def __post_init__(self) -> None:
        number("method.eval_batch_size", self.eval_batch_size, integer=True, minimum=1, strict=False)
        if self.context is not None:
            number("method.context", self.context, integer=True, minimum=1, strict=False)


CONFIGS: dict[str, type] = {"full": FullConfig, "adapter": AdapterConfig, "lora": LoraMethodConfig,
                            "prompt": PromptConfig, "icl": IclConfig}


def method_config(cfg: DictConfig | dict) -> Any:
    """The validated dataclass for a ``conf/method/*.yaml`` node (its ``kind`` names the implementation)."""
    kind = cfg.get("kind", cfg.get("name"))
    if kind not in CONFIGS:
        raise ValueError(f"method.kind='{kind}' is not one of: {', '.join(sorted(CONFIGS))}")
    cls = CONFIGS[kind]
    values = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    known = {f.name for f in fields(cls)}
    for key in set(values) - known - {"kind"}:  # a typo or another method's key would otherwise be ignored
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f"; did you mean method.{close[0]}?" if close else f" (method {kind} has: {', '.join(sorted(known))})"
        raise ValueError(f"method.{key}: not a key of method {kind}{hint}")
    return cls(**{k: v for k, v in values.items() if k in known})


def method_node(name: str, **overrides: Any) -> DictConfig:
    """``conf/method/<name>.yaml`` (a plain method: full, adapter, lora, prompt, icl) with ``overrides``: the
    method's node as a composed config holds it, for code that runs without Hydra."""
    node = OmegaConf.load(CONF_DIR / "method" / f"{name}.yaml")
    return OmegaConf.merge(node, overrides)

"""The run's config nodes as dataclasses that validate themselves (the style of ``gradft.config.guidance`` and
``gradft.config.method``): ``trainer``, ``eval``, ``data``, ``metrics``, ``save``, ``logger``, ``model`` and the
top-level run values, each built from the composed config by ``from_cfg(node)``.

The defaults live in the yaml only (``conf/config.yaml``, ``conf/trainer/default.yaml``, ``conf/logger/wandb.yaml``):
no field here has a default value. ``from_yaml(**overrides)`` builds a node from its yaml file for code that runs
without Hydra (tests, the Python API). Also owns ``train_steps``/``steps_for`` (how many steps a run takes) and the
value sets the checks name (``LOGGER_MODES``, ``STOP_MODES``, ...). Torch-free: ``python -m gradft`` refuses a bad
value in about a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import Container, OmegaConf

from gradft import CONF_DIR

HEADS = ("classifier", "lm")
SPLITS = ("eval", "select")
LOGGER_MODES = ("online", "offline", "disabled")  # W&B modes (gradft.tracking.resolve_mode)
STOP_MODES = ("fixed", "early")
SELECT_MODES = ("task", "pool")  # data.select (gradft.data.selection)
MAX_SEED = 2**63 - 1  # torch.manual_seed overflows above it ("Overflow when unpacking long long", naming no key)


def number(key: str, v: Any, minimum: float = 0.0, strict: bool = True, integer: bool = False,
           maximum: float | None = None) -> None:
    """``v`` must be a finite number (an integer with ``integer``) > ``minimum`` (≥ unless ``strict``), ≤ ``maximum``;
    the ``ValueError`` names the key and the value (NaN and inf fail)."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (not integer or isinstance(v, int))
    if not ok or not math.isfinite(v) or (v <= minimum if strict else v < minimum) or (maximum is not None
                                                                                         and v > maximum):
        kind = "an integer" if integer else "a finite number"
        upper = f" and ≤ {maximum if isinstance(maximum, int) else f'{maximum:g}'}" if maximum is not None else ""
        raise ValueError(f"{key}={v!r}: must be {kind} {'>' if strict else '≥'} {minimum:g}{upper}")


def choice(key: str, v: Any, options: tuple[str, ...]) -> None:
    if v not in options:
        raise ValueError(f"{key}={v!r}: must be one of {', '.join(options)}")


def flag(key: str, v: Any) -> None:
    if not isinstance(v, bool):
        raise ValueError(f"{key}={v!r}: must be true or false")


def _plain(v: Any) -> Any:
    return OmegaConf.to_container(v, resolve=True) if isinstance(v, Container) else v


class Node:
    """``from_cfg(node)``: the dataclass's fields read from a config node (a DictConfig or a dict); ``from_yaml``: the
    same from the node's file under ``conf/`` (``YAML``: the file, and the key inside it when the node is nested)."""

    YAML: ClassVar[tuple[str, str | None]]

    @classmethod
    def from_cfg(cls, node: Any) -> Any:
        return cls(**{f.name: _plain(node[f.name]) for f in fields(cls)})

    @classmethod
    def from_yaml(cls, conf_dir: Path = CONF_DIR, **overrides: Any) -> Any:
        """The node as the yaml sets it, then ``overrides`` (a field that does not exist is a TypeError)."""
        path, key = cls.YAML
        node = OmegaConf.load(Path(conf_dir) / path)
        return replace(cls.from_cfg(node[key] if key else node), **overrides)


@dataclass
class TrainerConfig(Node):
    """``trainer:`` (conf/trainer/default.yaml)."""

    YAML: ClassVar = ("trainer/default.yaml", None)
    steps: int | None
    epochs: float
    max_steps: int
    stop: str
    patience: int
    batch_size: int
    weight_decay: float
    max_grad_norm: float
    schedule: str
    warmup_ratio: float
    max_skipped: int
    device: str
    precision: str
    grad_accum: int
    gradient_checkpointing: bool
    threads: int | None

    def __post_init__(self) -> None:
        if self.steps is not None:
            number("trainer.steps", self.steps, integer=True, strict=False)
        number("trainer.epochs", self.epochs, strict=False)
        number("trainer.max_steps", self.max_steps, integer=True)
        number("trainer.batch_size", self.batch_size, integer=True)
        number("trainer.weight_decay", self.weight_decay, strict=False)
        number("trainer.max_grad_norm", self.max_grad_norm, strict=False)
        number("trainer.warmup_ratio", self.warmup_ratio, strict=False, maximum=1)
        number("trainer.max_skipped", self.max_skipped, integer=True, strict=False)
        choice("trainer.schedule", self.schedule, ("linear", "constant"))
        choice("trainer.precision", self.precision, ("fp32", "bf16"))
        if not (isinstance(self.device, str) and self.device.split(":")[0] in ("auto", "cpu", "cuda", "mps")):
            raise ValueError(f"trainer.device={self.device!r}: must be auto, cpu, cuda (or cuda:N) or mps")
        number("trainer.grad_accum", self.grad_accum, integer=True, minimum=1, strict=False)
        flag("trainer.gradient_checkpointing", self.gradient_checkpointing)
        if self.threads is not None:
            number("trainer.threads", self.threads, integer=True)
        choice("trainer.stop", self.stop, STOP_MODES)
        number("trainer.patience", self.patience, integer=True, minimum=1, strict=False)


@dataclass
class MetricsConfig(Node):
    """``metrics:`` (conf/config.yaml): the gradient metrics (gradft.metrics)."""

    YAML: ClassVar = ("config.yaml", "metrics")
    space: str
    every: int
    sketch: str

    def __post_init__(self) -> None:
        number("metrics.every", self.every, integer=True, strict=False)  # 0: no gradient metrics (sweeps)
        choice("metrics.space", self.space, ("backbone", "trainable"))
        choice("metrics.sketch", self.sketch, ("auto", "exact", "sketch"))


@dataclass
class EvalConfig(Node):
    """``eval:`` (conf/config.yaml)."""

    YAML: ClassVar = ("config.yaml", "eval")
    batch_size: int
    max_examples: int | None
    splits: list[str]
    select_every: int

    def __post_init__(self) -> None:
        number("eval.batch_size", self.batch_size, integer=True)
        if self.max_examples is not None:
            number("eval.max_examples", self.max_examples, integer=True)
        number("eval.select_every", self.select_every, integer=True, strict=False)
        s = self.splits
        if not isinstance(s, list) or not s or any(x not in SPLITS for x in s):
            raise ValueError(f"eval.splits={s!r}: must be a non-empty list of {', '.join(SPLITS)}")


@dataclass
class DataConfig(Node):
    """``data:`` (conf/config.yaml): the keys checked before any data is read (gradft.data reads the rest)."""

    YAML: ClassVar = ("config.yaml", "data")
    select: str
    select_size: int

    def __post_init__(self) -> None:
        choice("data.select", self.select, SELECT_MODES)
        number("data.select_size", self.select_size, integer=True, minimum=1, strict=False)


@dataclass
class SaveConfig(Node):
    """``save:`` (conf/config.yaml): what a run writes beside results.json (gradft.trained.save)."""

    YAML: ClassVar = ("config.yaml", "save")
    model: bool
    predictions: bool

    def __post_init__(self) -> None:
        for f in fields(self):
            flag(f"save.{f.name}", getattr(self, f.name))


@dataclass
class LoggerConfig(Node):
    """``logger:`` (conf/logger/wandb.yaml): the keys checked before wandb is imported."""

    YAML: ClassVar = ("logger/wandb.yaml", None)
    mode: str

    def __post_init__(self) -> None:
        choice("logger.mode", self.mode, LOGGER_MODES)


@dataclass
class ModelConfig(Node):
    """``model:`` (conf/model/*.yaml): the keys checked before a model is loaded (gradft.models reads the rest)."""

    YAML: ClassVar = ("model/minilm.yaml", None)
    max_length: int
    where: str  # hub: name_or_path when it is a path on disk ("" otherwise)

    @classmethod
    def from_cfg(cls, node: Any) -> ModelConfig:
        where = str(node.get("name_or_path") or "") if node.get("source") == "hub" else ""
        return cls(max_length=node["max_length"], where=where)

    def __post_init__(self) -> None:
        number("model.max_length", self.max_length, integer=True, minimum=1)
        if self.where.startswith(("/", "./", "../", "~")) and not Path(self.where).expanduser().is_dir():
            raise ValueError(f"model.name_or_path={self.where!r}: no such folder (a local model is a folder with "
                             "config.json; a hub id looks like org/name)")


@dataclass
class RunValues(Node):
    """The top-level values of conf/config.yaml: ``head``, ``shots`` (k), ``seed``, ``data_seed``."""

    YAML: ClassVar = ("config.yaml", None)
    head: str
    shots: int
    seed: int
    data_seed: int

    def __post_init__(self) -> None:
        choice("head", self.head, HEADS)
        number("shots", self.shots, integer=True, strict=self.head == "classifier")  # lm: shots=0 is zero-shot
        number("seed", self.seed, integer=True, strict=False, maximum=MAX_SEED)  # torch.manual_seed's range
        number("data_seed", self.data_seed, integer=True, strict=False, maximum=MAX_SEED)


def train_steps(cfg: Any, n_shots: int) -> int:
    """``trainer.steps`` if set, else epochs × steps per epoch, capped at ``trainer.max_steps``."""
    return steps_for(cfg.trainer, n_shots)


def steps_for(trainer: Any, n_shots: int) -> int:
    """``train_steps`` on the trainer node alone (a DictConfig, a plain dict as ``config_key`` holds it, or a
    ``TrainerConfig``)."""
    tr = trainer if isinstance(trainer, TrainerConfig) else None
    steps, batch_size, max_steps, epochs = ((tr.steps, tr.batch_size, tr.max_steps, tr.epochs) if tr else
                                            (trainer["steps"], trainer["batch_size"], trainer["max_steps"],
                                             trainer["epochs"]))
    if not n_shots:  # zero-shot: no training, whatever the trainer says
        return 0
    if steps is not None:
        return int(steps)
    per_epoch = math.ceil(n_shots / min(batch_size, n_shots))  # 32 shots / batch 8 = 4 steps
    return min(int(max_steps), math.ceil(epochs * per_epoch))

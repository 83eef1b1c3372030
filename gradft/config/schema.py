"""The composed config, checked before anything heavy is imported: ``validate(cfg)`` and ``check_override_keys``.

Owns: the key schema (every key that a file under ``conf/`` or a config dataclass defines, per node), unknown keys
(``+foo=1``, ``trainer.stepz=3``: refused, with a "did you mean"), NaN and inf anywhere, and the checks that span
nodes (a run with 0 training steps is an error unless ``shots=0``; icl needs head=lm; the prompt template against the
task's fields). Each node's own values are checked by its dataclass (``gradft.config.nodes``, ``.guidance``,
``.method``), which ``validate`` builds. Imports only the standard library, omegaconf and the torch-free config
dataclasses, so that ``python -m gradft shots=abc`` (or ``guidance.tau=-1``) fails in about a second.
"""

from __future__ import annotations

import difflib
import functools
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gradft import CONF_DIR
from gradft.config.guidance import GuidanceConfig
from gradft.config.method import CONFIGS as METHOD_CONFIGS
from gradft.config.method import method_config
from gradft.config.nodes import (
    DataConfig,
    EvalConfig,
    LoggerConfig,
    MetricsConfig,
    ModelConfig,
    RunValues,
    SaveConfig,
    TrainerConfig,
    steps_for,
)
from gradft.config.prompt import prompt_spec

GROUPS = ("model", "task", "guidance", "method", "trainer", "logger")
# keys the code reads that no shipped yaml sets (hub.yaml's name_or_path is set; these are dataclass-only)
EXTRA_KEYS: dict[str, set[str]] = {"method": {"kind"}}


def _is_global(path: Path) -> bool:
    return any(line.strip() == "# @package _global_" for line in path.read_text().splitlines()[:3])


def _add(schema: dict[str, set[str] | None], node: dict[str, Any]) -> None:
    for key, value in node.items():
        if key == "defaults":
            continue
        if isinstance(value, dict):
            old = schema.get(key)
            schema[key] = (old or set()) | set(value)
        else:
            schema.setdefault(key, None)


@functools.lru_cache(maxsize=4)
def schema(conf_dir: Path = CONF_DIR) -> dict[str, set[str] | None]:
    """Top-level key -> the keys its node may have (None: a plain value), the union over every option of every group
    (a key of ``method=adapter`` is a key of the method node) and the dataclasses' fields."""
    out: dict[str, set[str] | None] = {}
    _add(out, OmegaConf.to_container(OmegaConf.load(conf_dir / "config.yaml")))
    for path in sorted(conf_dir.glob("*/*.yaml")):
        node = OmegaConf.to_container(OmegaConf.load(path)) or {}
        if _is_global(path):
            _add(out, node)
        elif path.parent.name in GROUPS:
            _add(out, {path.parent.name: node})
    for name in GROUPS:
        out[name] = (out.get(name) or set()) | EXTRA_KEYS.get(name, set())

    for cls in METHOD_CONFIGS.values():
        out["method"] |= {f.name for f in fields(cls)}
    out.pop("hydra", None)
    out["task"] = None  # a task yaml may live on the user's own search path (gradft.data checks its keys)
    return out


def _suggest(key: str, candidates: set[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key, sorted(candidates), n=1, cutoff=0.6)
    return f"; did you mean {prefix}{close[0]}?" if close else ""


def unknown_keys(cfg: DictConfig, conf_dir: Path = CONF_DIR) -> list[str]:
    """Keys of ``cfg`` (top level and one level down) that no config file or dataclass defines, each with a hint."""
    sch, bad = schema(conf_dir), []
    for key in cfg:
        if key == "hydra":
            continue
        if key not in sch:
            bad.append(f"{key}{_suggest(key, set(sch))}")
            continue
        sub, node = sch[key], cfg.get(key)
        if sub is not None and isinstance(node, DictConfig):
            bad += [f"{key}.{k}{_suggest(k, sub, key + '.')}" for k in node if k not in sub]
    return bad


def check_override_keys(overrides: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Command-line overrides of keys that do not exist (``trainer.stepz=3``) fail here, with a "did you mean",
    before Hydra's longer error. Additions (``+k=v``), deletions and ``hydra.*`` are left to Hydra and ``validate``."""
    sch = schema(conf_dir)
    top = set(sch) | {"experiment", "debug", "hydra"}
    for arg in overrides:
        if arg.startswith(("-", "+", "~")) or "=" not in arg:
            continue
        key = arg.split("=", 1)[0]
        if "@" in key or "/" in key or key.startswith("hydra"):
            continue
        parts = key.split(".")
        if parts[0] not in top:
            raise ValueError(f"{key}: no such config key{_suggest(parts[0], top)}")
        sub = sch.get(parts[0])
        if len(parts) > 1 and sub is not None and parts[1] not in sub:
            raise ValueError(f"{key}: no such config key{_suggest(parts[1], sub, parts[0] + '.')}")


def _finite_everywhere(node: Any, prefix: str = "") -> None:
    """NaN or inf anywhere in the config is an error (``v < 0`` lets NaN through; no config means inf)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        key = f"{prefix}{k}" if isinstance(node, dict) else f"{prefix[:-1]}[{k}]"
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{key}={v!r}: must be a finite number")
        if isinstance(v, (dict, list)):
            _finite_everywhere(v, f"{key}.")


def validate(cfg: DictConfig) -> None:
    """Every check that needs no data and no model: a bad value fails here, naming its key. Each node's dataclass
    checks its own values (``gradft.config.nodes``); what spans nodes is checked here."""
    bad = unknown_keys(cfg)
    if bad:
        raise ValueError(f"unknown config key{'s' * (len(bad) > 1)}: {', '.join(bad)} (no config file defines "
                         f"{'them' if len(bad) > 1 else 'it'}; docs: conf/config.yaml)")
    _finite_everywhere(OmegaConf.to_container(cfg, resolve=False))
    run = RunValues.from_cfg(cfg)
    method_config(cfg.method)
    icl = cfg.method.get("kind", cfg.method.get("name")) == "icl"
    if icl and run.head != "lm":
        raise ValueError("method=icl (in-context learning) needs head=lm: the demonstrations are read by the "
                         f"pretrained LM head, and head={run.head}'s new head is untrained")
    if icl and cfg.guidance.name != "none":
        raise ValueError(f"method=icl takes no training step: guidance={cfg.guidance.name} has nothing to guide")
    if run.head == "lm":
        labels = cfg.task.get("labels")  # null: inferred from the train pool; the run checks the count once it is read
        mc = cfg.task.get("format") == "copa"  # = data.is_multiple_choice
        prompt_spec(cfg.task, len(labels) if labels else len(cfg.task.prompt.get("verbalizer") or []), mc)
    tr = TrainerConfig.from_cfg(cfg.trainer)
    if tr.grad_accum > 1 and cfg.guidance.get("hvp") == "sub_batch":
        raise ValueError("trainer.grad_accum > 1 with guidance.hvp=sub_batch: the sub-batch estimator takes its m "
                         "examples from one pass; use another guidance.hvp or grad_accum=1")
    if run.shots and steps_for(tr, run.shots) == 0:
        how = "trainer.steps=0" if tr.steps is not None else f"trainer.epochs={tr.epochs!r}"
        raise ValueError(f"{how} gives 0 training steps: an untrained model is not a result (only shots=0, "
                         "head=lm, evaluates the pretrained model)")
    MetricsConfig.from_cfg(cfg.metrics)
    ev = EvalConfig.from_cfg(cfg.eval)
    ModelConfig.from_cfg(cfg.model)
    LoggerConfig.from_cfg(cfg.logger)
    SaveConfig.from_cfg(cfg.save)
    if cfg.guidance.name != "none":
        GuidanceConfig.from_cfg(cfg.guidance)
    if tr.stop == "early" and not ev.select_every > 0:
        raise ValueError("trainer.stop=early scores the selection split every eval.select_every steps: set "
                         "eval.select_every=N (N > 0), e.g. the steps of one epoch")
    DataConfig.from_cfg(cfg.data)

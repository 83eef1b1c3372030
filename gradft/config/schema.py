"""The composed config, checked before anything heavy is imported: ``validate(cfg)`` and ``check_override_keys``.

Owns: the key schema (every key that a file under ``conf/`` or a config dataclass defines, per node), unknown keys
(``+foo=1``, ``trainer.stepz=3``: refused, with a "did you mean"), the range of every number (finite: NaN and inf
fail everywhere), a run with 0 training steps (an error unless ``shots=0``), the prompt template against the task's
fields, and ``train_steps``. Imports only the standard library, omegaconf and the torch-free config dataclasses, so
that ``python -m gradft shots=abc`` (or ``guidance.tau=-1``) fails in about a second.
"""

from __future__ import annotations

import difflib
import functools
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from gradft import CONF_DIR  # noqa: F401  (re-exported: callers import it here)
from gradft.config.guidance import guidance_config
from gradft.config.prompt import prompt_spec
from gradft.methods import method_config
from gradft.methods.config import CONFIGS as METHOD_CONFIGS
from gradft.stopping import check_stop_config
from gradft.tracking import MODES

HEADS = ("classifier", "lm")
GROUPS = ("model", "task", "guidance", "method", "trainer", "logger")
SPLITS = ("eval", "select")
# keys the code reads that no shipped yaml sets (hub.yaml's name_or_path is set; these are dataclass-only)
EXTRA_KEYS: dict[str, set[str]] = {"method": {"kind"}}
MAX_SEED = 2**63 - 1  # torch.manual_seed overflows above it ("Overflow when unpacking long long", naming no key)


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
    from dataclasses import fields

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


def _number(key: str, v: Any, minimum: float = 0.0, strict: bool = True, integer: bool = False,
            maximum: float | None = None) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (not integer or isinstance(v, int))
    if not ok or not math.isfinite(v) or (v <= minimum if strict else v < minimum) or (maximum is not None
                                                                                         and v > maximum):
        kind = "an integer" if integer else "a finite number"
        upper = f" and ≤ {maximum if isinstance(maximum, int) else f'{maximum:g}'}" if maximum is not None else ""
        raise ValueError(f"{key}={v!r}: must be {kind} {'>' if strict else '≥'} {minimum:g}{upper}")


def _finite_everywhere(node: Any, prefix: str = "") -> None:
    """NaN or inf anywhere in the config is an error (``v < 0`` lets NaN through; no config means inf)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        key = f"{prefix}{k}" if isinstance(node, dict) else f"{prefix[:-1]}[{k}]"
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{key}={v!r}: must be a finite number")
        if isinstance(v, (dict, list)):
            _finite_everywhere(v, f"{key}.")


def train_steps(cfg: DictConfig, n_shots: int) -> int:
    """``trainer.steps`` if set, else epochs × steps per epoch, capped at ``trainer.max_steps``."""
    return steps_for(cfg.trainer, n_shots)


def steps_for(trainer: Any, n_shots: int) -> int:
    """``train_steps`` on the trainer node alone (a DictConfig or a plain dict, as ``config_key`` holds it)."""
    if not n_shots:  # zero-shot: no training, whatever the trainer says
        return 0
    if trainer["steps"] is not None:
        return int(trainer["steps"])
    per_epoch = math.ceil(n_shots / min(trainer["batch_size"], n_shots))  # 32 shots / batch 8 = 4 steps
    return min(int(trainer["max_steps"]), math.ceil(trainer["epochs"] * per_epoch))


def _choice(key: str, v: Any, options: tuple[str, ...]) -> None:
    if v not in options:
        raise ValueError(f"{key}={v!r}: must be one of {', '.join(options)}")


def validate(cfg: DictConfig) -> None:
    """Every check that needs no data and no model: a bad value fails here, naming its key."""
    bad = unknown_keys(cfg)
    if bad:
        raise ValueError(f"unknown config key{'s' * (len(bad) > 1)}: {', '.join(bad)} (no config file defines "
                         f"{'them' if len(bad) > 1 else 'it'}; docs: conf/config.yaml)")
    _finite_everywhere(OmegaConf.to_container(cfg, resolve=False))
    head = cfg.get("head", "classifier")
    _choice("head", head, HEADS)
    _number("shots", cfg.shots, integer=True, strict=head == "classifier")  # lm: shots=0 is zero-shot
    method_config(cfg.method)
    icl = cfg.method.get("kind", cfg.method.get("name")) == "icl"
    if icl and head != "lm":
        raise ValueError("method=icl (in-context learning) needs head=lm: the demonstrations are read by the "
                         f"pretrained LM head, and head={head}'s new head is untrained")
    if icl and cfg.guidance.name != "none":
        raise ValueError(f"method=icl takes no training step: guidance={cfg.guidance.name} has nothing to guide")
    if head == "lm":
        labels = cfg.task.get("labels")  # null: inferred from the train pool; the run checks the count once it is read
        mc = cfg.task.get("format") == "copa"  # = data.is_multiple_choice
        prompt_spec(cfg.task, len(labels) if labels else len(cfg.task.prompt.get("verbalizer") or []), mc)
    tr = cfg.trainer
    if tr.steps is not None:
        _number("trainer.steps", tr.steps, integer=True, strict=False)
    _number("trainer.epochs", tr.epochs, strict=False)
    _number("trainer.max_steps", tr.max_steps, integer=True)
    _number("trainer.batch_size", tr.batch_size, integer=True)
    _number("trainer.weight_decay", tr.weight_decay, strict=False)
    _number("trainer.max_grad_norm", tr.max_grad_norm, strict=False)
    _number("trainer.warmup_ratio", tr.warmup_ratio, strict=False, maximum=1)
    _number("trainer.max_skipped", tr.max_skipped, integer=True, strict=False)
    _choice("trainer.schedule", tr.schedule, ("linear", "constant"))
    _choice("trainer.precision", tr.get("precision", "fp32"), ("fp32", "bf16"))
    if not (isinstance(tr.device, str) and tr.device.split(":")[0] in ("auto", "cpu", "cuda", "mps")):
        raise ValueError(f"trainer.device={tr.device!r}: must be auto, cpu, cuda (or cuda:N) or mps")
    _number("trainer.grad_accum", tr.get("grad_accum", 1), integer=True, minimum=1, strict=False)
    if not isinstance(tr.get("gradient_checkpointing", False), bool):
        raise ValueError(f"trainer.gradient_checkpointing={tr.gradient_checkpointing!r}: must be true or false")
    if tr.get("grad_accum", 1) > 1 and cfg.guidance.get("hvp") == "sub_batch":
        raise ValueError("trainer.grad_accum > 1 with guidance.hvp=sub_batch: the sub-batch estimator takes its m "
                         "examples from one pass; use another guidance.hvp or grad_accum=1")
    if tr.threads is not None:
        _number("trainer.threads", tr.threads, integer=True)
    if cfg.shots and train_steps(cfg, cfg.shots) == 0:
        how = "trainer.steps=0" if tr.steps is not None else f"trainer.epochs={tr.epochs!r}"
        raise ValueError(f"{how} gives 0 training steps: an untrained model is not a result (only shots=0, "
                         "head=lm, evaluates the pretrained model)")
    _number("metrics.every", cfg.metrics.every, integer=True, strict=False)  # 0: no gradient metrics (sweeps)
    _choice("metrics.space", cfg.metrics.space, ("backbone", "trainable"))
    _choice("metrics.sketch", cfg.metrics.get("sketch", "auto"), ("auto", "exact", "sketch"))
    ev = cfg.eval
    _number("eval.batch_size", ev.batch_size, integer=True)
    if ev.max_examples is not None:
        _number("eval.max_examples", ev.max_examples, integer=True)
    _number("eval.select_every", ev.select_every, integer=True, strict=False)
    splits = list(ev.splits) if isinstance(ev.splits, ListConfig) else ev.splits
    if not isinstance(splits, list) or not splits or any(s not in SPLITS for s in splits):
        raise ValueError(f"eval.splits={splits!r}: must be a non-empty list of {', '.join(SPLITS)}")
    _number("model.max_length", cfg.model.max_length, integer=True, minimum=1)
    where = str(cfg.model.get("name_or_path") or "") if cfg.model.get("source") == "hub" else ""
    if where.startswith(("/", "./", "../", "~")) and not Path(where).expanduser().is_dir():  # a path, not a hub id
        raise ValueError(f"model.name_or_path={where!r}: no such folder (a local model is a folder with config.json; "
                         "a hub id looks like org/name)")
    _number("seed", cfg.seed, integer=True, strict=False, maximum=MAX_SEED)  # torch.manual_seed's range
    _number("data_seed", cfg.data_seed, integer=True, strict=False, maximum=MAX_SEED)
    _choice("logger.mode", cfg.logger.mode, MODES)
    for key, v in (cfg.get("save") or {}).items():
        if not isinstance(v, bool):
            raise ValueError(f"save.{key}={v!r}: must be true or false")
    if cfg.guidance.name != "none":
        guidance_config(cfg.guidance)
    check_stop_config(cfg)  # trainer.stop/patience, data.select/select_size (gradft.stopping)

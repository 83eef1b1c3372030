"""The trained model out, and back in: what a run saves beside its results.json, and how ``gradft.trained.predict``
reloads it.

``save.model`` (default true for one run; grids and sweeps set it false unless asked) writes ``<run>/model/`` in the
ecosystem's formats:

- ``lora``, ``ours`` (LoRA + guidance), ``prompt``: peft's ``save_pretrained`` (``adapter_config.json``,
  ``adapter_model.safetensors``); a new classifier head is in it through peft's ``modules_to_save``. Reload with
  ``PeftModel.from_pretrained(<base>, <run>/model)``; the base is ``base_model_name_or_path`` of adapter_config.json.
- ``full``: the whole model (``save_pretrained``) with ``config.id2label`` / ``label2id`` set to the task's labels.
- ``adapter`` (our bottleneck module, ``gradft.methods.adapter``): its trainable state dict
  (``adapter_model.safetensors``: adapters, LayerNorms, head) and ``adapter.json`` (bottleneck, targets, base).
- zero-shot (``shots=0``): nothing was trained; the folder points at the pretrained model.

Every format also holds the tokenizer and ``gradft_model.json``: format, method, head, label names, the base model and,
with ``head=lm``, the prompt spec that scores it (also in the run's config.yaml). A model built from a config
(``source: scratch``, the tests' tiny models) has no checkpoint to point at: its initial weights are rebuilt from the
run's seed and saved once as ``<run>/base_model/``.

``save.predictions`` (default true; grids false) writes ``<run>/predictions.jsonl`` from the eval pass that gave
results.json's metrics: example id, gold and predicted label, per-class scores. Files are written atomically.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from peft import PeftModel
from safetensors.torch import load_file, save_file

from gradft import __version__
from gradft.config.method import method_config, method_node
from gradft.data.formats import Example, norm_label
from gradft.methods import method_apply
from gradft.models import AUTO_CLASSES, _tokenizer, head_kind, load_backbone, resolve_path
from gradft.tracking import atomic_write

log = logging.getLogger(__name__)

MODEL_DIR = "model"
BASE_DIR = "base_model"
META = "gradft_model.json"
PREDICTIONS = "predictions.jsonl"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def wants(cfg: DictConfig, what: str) -> bool:
    """``save.<what>`` (model | predictions); a config from before the ``save`` node saves nothing."""
    return bool((cfg.get("save") or {}).get(what, False))


def prediction_rows(examples: list[Example], scores: list[list[float]], labels: list[str]) -> list[dict[str, Any]]:
    """One row per example: id, gold label (null when unlabelled), predicted label, per-class scores (class logits;
    LM head: label-word logits or candidates' mean log-probabilities)."""
    rows = []
    for ex, row in zip(examples, scores, strict=True):
        pred = max(range(len(row)), key=row.__getitem__)  # the first maximum, as torch.argmax
        gold = ex.label if 0 <= ex.label < len(labels) else None
        rows.append({"id": ex.idx, **({"group": ex.group} if ex.group is not None else {}),
                     "gold": labels[gold] if gold is not None else None, "gold_index": gold,
                     "pred": labels[pred], "pred_index": pred, "scores": dict(zip(labels, row, strict=True))})
    return rows


def write_predictions(path: Path, rows: list[dict[str, Any]]) -> Path:
    atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _base_path(cfg: DictConfig, out: Path, n_out: int, head: str, labels: dict) -> str:
    """The checkpoint the saved weights apply to. Scratch models: rebuilt from the run's seed (as run() built them,
    RNG state restored afterwards) and saved once under ``<run>/base_model``."""
    if cfg.model.source != "scratch":
        return str(resolve_path(cfg.model, Path(cfg.paths.cache_dir)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        base, tok = load_backbone(cfg.model, n_out, cfg.paths.cache_dir, head)
    base.config.update(labels)
    _atomic_dir(out / BASE_DIR, lambda d: (base.save_pretrained(d), tok.save_pretrained(d)))
    return str((out / BASE_DIR).resolve())


def _atomic_dir(dest: Path, write) -> None:
    """``write(tmp)`` into a temporary folder beside ``dest``, then swap it in (a crash leaves no half folder)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        write(tmp)
        for f in [tmp, *tmp.rglob("*")]:  # mkdtemp and safetensors make them private; results are meant to be shared
            f.chmod(0o755 if f.is_dir() else 0o644)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _label_config(labels: list[str], multiple_choice: bool, head: str) -> dict[str, Any]:
    """id2label / label2id for a classifier head (COPA's single score per choice has no class names to give)."""
    if head != "classifier" or multiple_choice:
        return {}
    return {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}


def save_model(out: Path, cfg: DictConfig, model: torch.nn.Module, tok: Any, task: Any) -> dict[str, Any]:
    """Write ``<out>/model`` (formats: module docstring); returns results.json's ``saved`` entries."""
    head = cfg.get("head", "classifier")
    n_out = 1 if task.multiple_choice else len(task.labels)
    labels = _label_config(task.labels, task.multiple_choice, head)
    kind = cfg.method.get("kind", cfg.method.name)
    if not cfg.shots:
        fmt = "pretrained"
    elif isinstance(model, PeftModel):
        fmt = "peft"
    elif kind in ("full", "adapter"):
        fmt = kind
    else:  # a new method needs its format here; the run's results are still written
        log.warning("method %s (kind %s): no save format, the model is not saved", cfg.method.name, kind)
        return {}
    base = None if fmt == "full" else _base_path(cfg, out, n_out, head, labels)
    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    inner.config.update(labels)
    meta: dict[str, Any] = {
        "format": fmt, "method": cfg.method.name if cfg.shots else None, "kind": kind if cfg.shots else None,
        "head": head, "model_kind": head_kind(model), "base_model": base, "num_labels": n_out,
        "labels": list(task.labels), "label_values": _label_values(cfg, task), "multiple_choice": task.multiple_choice,
        "task": task.name, "dtype": cfg.model.get("dtype", "float32"),
        "attn_implementation": cfg.model.get("attn_implementation", "sdpa"),
        "precision": cfg.trainer.get("precision", "fp32"), "gradft_version": __version__,
    }
    if head == "lm":
        meta["prompt"] = OmegaConf.to_container(cfg.task.prompt, resolve=True)

    def write(d: Path) -> None:
        if fmt in ("peft", "full"):
            model.save_pretrained(d)
            if fmt == "peft" and cfg.model.source == "scratch":  # peft records the config's (empty) name
                conf = json.loads((d / "adapter_config.json").read_text())
                conf["base_model_name_or_path"] = base
                (d / "adapter_config.json").write_text(json.dumps(conf, indent=2, sort_keys=True))
        elif fmt == "adapter":
            state = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
            save_file(state, str(d / ADAPTER_WEIGHTS))
            meta["adapter"] = {k: cfg.method[k] for k in ("bottleneck", "targets", "train_layernorm")}
        tok.save_pretrained(d)
        (d / META).write_text(json.dumps(meta, indent=2, sort_keys=True))

    _atomic_dir(out / MODEL_DIR, write)
    size = sum(f.stat().st_size for f in (out / MODEL_DIR).rglob("*") if f.is_file())
    log.info("saved the %s model (%s, %.1f MB) to %s", cfg.method.name, fmt, size / 1e6, out / MODEL_DIR)
    return {"model": str(out / MODEL_DIR), "format": fmt, "base_model": base, "bytes": size}


def _label_values(cfg: DictConfig, task: Any) -> list[str]:
    """The raw label values of the task's files in class order (to read gold labels from a file to predict on)."""
    if isinstance(getattr(task, "info", None), dict) and task.info.get("labels"):
        return [str(v) for v in task.info["labels"]]  # a table task: listed or inferred from the train pool
    return [norm_label(v) for v in cfg.task.get("labels") or task.labels]


def save_run(out: Path, cfg: DictConfig, model: torch.nn.Module, tok: Any, task: Any, eval_set: list[Example],
             scores: list | None) -> dict[str, Any]:
    """What run() saves besides results.json (``save.model``, ``save.predictions``): results.json's ``saved``."""
    saved: dict[str, Any] = {}
    if wants(cfg, "predictions") and scores:
        saved["predictions"] = str(write_predictions(out / PREDICTIONS, prediction_rows(eval_set, scores,
                                                                                         task.labels)))
    if wants(cfg, "model"):
        saved.update(save_model(out, cfg, model, tok, task))
    return saved


# ---- back in ----------------------------------------------------------------------------------------------------

def load_meta(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / MODEL_DIR / META
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the run saved no model (save.model=false, e.g. a grid cell; "
                                "rerun it with save.model=true)")
    return json.loads(path.read_text())


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Any, DictConfig,
                                                                                   dict[str, Any]]:
    """A run's saved model, in eval mode: (model, tokenizer, the run's config, gradft_model.json)."""
    run_dir = Path(run_dir)
    meta = load_meta(run_dir)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    mdir = run_dir / MODEL_DIR
    auto = AUTO_CLASSES[meta["model_kind"]]
    kw = {"dtype": getattr(torch, meta["dtype"]), "attn_implementation": meta["attn_implementation"]}
    base_kw = {**kw, **({"num_labels": meta["num_labels"]} if meta["model_kind"] == "classifier" else {})}
    fmt = meta["format"]
    if fmt == "full":
        model = auto.from_pretrained(mdir, **kw)
    elif fmt == "peft":
        model = PeftModel.from_pretrained(auto.from_pretrained(meta["base_model"], **base_kw), mdir)
    elif fmt == "adapter":
        model = method_apply("adapter")(auto.from_pretrained(meta["base_model"], **base_kw),
                                        method_config(method_node("adapter", **meta["adapter"])))
        state = load_file(str(mdir / ADAPTER_WEIGHTS))
        missing = {n for n, p in model.named_parameters() if p.requires_grad} - set(state)
        unexpected = model.load_state_dict(state, strict=False).unexpected_keys
        if missing or unexpected:
            raise ValueError(f"{mdir / ADAPTER_WEIGHTS} does not fit the adapter model: missing {sorted(missing)[:4]}, "
                             f"unexpected {sorted(unexpected)[:4]}")
    elif fmt == "pretrained":
        model = auto.from_pretrained(meta["base_model"], **base_kw)
    else:
        raise ValueError(f"{mdir / META}: unknown format {fmt!r}")
    tok = _tokenizer(str(mdir))
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner.config.pad_token_id = tok.pad_token_id
    model.to(device).eval()
    return model, tok, cfg, meta


def task_view(meta: dict[str, Any]) -> SimpleNamespace:
    """What a collator needs of a task (labels, multiple choice), from gradft_model.json alone."""
    return SimpleNamespace(name=meta["task"], labels=meta["labels"], multiple_choice=meta["multiple_choice"])

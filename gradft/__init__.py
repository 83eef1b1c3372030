"""gradft: few-shot fine-tuning of language models with structured gradient guidance.

Start at ``gradft.run.run`` (one run), ``conf/config.yaml`` (what composes it) and docs/metrics.md (what is measured).

The Python API (docs/api.md) is imported lazily, so that ``import gradft`` stays light (the CLI's config check
imports it before torch)::

    from gradft import Guidance, GuidanceConfig     # any PyTorch loop: guide.step_gradient(batch)
    from gradft import GuidedTrainer                # a transformers.Trainer subclass
"""

import os
from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"
_PACKAGE = Path(__file__).resolve().parent

# The Hydra configs. A wheel ships the repo's conf/ as gradft/conf (pyproject.toml: package-dir); a source checkout
# or an editable install has no gradft/conf and reads the repo's conf/ itself. Defined here once: every module and
# tool (and `--conf-dir` defaults) take it from here.
CONF_DIR = _PACKAGE / "conf" if (_PACKAGE / "conf" / "config.yaml").is_file() else _PACKAGE.parent / "conf"
# The checkout's root when running from one; None when installed from a wheel (then ${project_root:} is the cwd).
PROJECT_ROOT: Path | None = _PACKAGE.parent if CONF_DIR == _PACKAGE.parent / "conf" else None


def project_root() -> Path:
    """What ``${project_root:}`` in configs means: the source checkout's root (so that ``../shared/data`` works from
    any folder), or the current directory for an installed wheel (data roots then come from GRADFT_SUPERGLUE,
    GRADFT_FEWGLUE, GRADFT_DOMAIN or ``data.*_root=`` overrides; docs/data.md)."""
    return PROJECT_ROOT if PROJECT_ROOT is not None else Path(os.getcwd())


if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(project_root()))

# public name -> the module that defines it (imported on first access)
_API = {"Guidance": "gradft.api", "GuidanceConfig": "gradft.config.guidance", "GuidedStep": "gradft.guidance",
        "StructuredGuidance": "gradft.guidance", "ParamSpace": "gradft.gradients", "GuidedTrainer": "gradft.hf",
        "all_reduce_mean": "gradft.gradients"}
__all__ = ["CONF_DIR", "PROJECT_ROOT", "__version__", "project_root", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'gradft' has no attribute {name!r}")

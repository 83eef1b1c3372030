"""gradft: few-shot fine-tuning of language models with structured gradient guidance.

Start at ``gradft.run.run`` (one run), ``conf/config.yaml`` (what composes it) and docs/metrics.md (what is measured).

The Python API (docs/api.md) is imported lazily, so that ``import gradft`` stays light (the CLI's config check
imports it before torch)::

    from gradft import Guidance, GuidanceConfig     # any PyTorch loop: guide.step_gradient(batch)
    from gradft import GuidedTrainer                # a transformers.Trainer subclass
"""

from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# ${project_root:} in configs: paths that work whatever the current directory
if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))

# public name -> the module that defines it (imported on first access)
_API = {"Guidance": "gradft.api", "GuidanceConfig": "gradft.guidance_config", "GuidedStep": "gradft.guidance",
        "StructuredGuidance": "gradft.guidance", "ParamSpace": "gradft.gradients", "GuidedTrainer": "gradft.hf",
        "all_reduce_mean": "gradft.distributed"}
__all__ = ["PROJECT_ROOT", "__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'gradft' has no attribute {name!r}")

"""gradft: few-shot fine-tuning of language models with structured gradient guidance.

Start at ``gradft.run.run`` (one run), ``conf/config.yaml`` (what composes it) and docs/metrics.md (what is measured).
"""

from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# ${project_root:} in configs: paths that work whatever the current directory
if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))

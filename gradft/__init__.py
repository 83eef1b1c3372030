"""gradft: few-shot fine-tuning of language models with structured gradient guidance.

Start at ``gradft.run.run`` (one run), ``conf/config.yaml`` (what composes it) and docs/metrics.md (what is measured).
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

"""Finding a task config by name the way ``task=<name>`` does: on the run's Hydra config search path.

Owns `search_path` (gradft's ``CONF_DIR`` plus ``--config-dir`` and ``hydra.searchpath`` of the current run) and
`compose_task`, which the guidance's source task (``guidance.source_task=<name>``) and tools use, so that a task yaml
kept in a user's own config dir works as a guidance source exactly as it works as a target. Hydra is imported inside
the functions: importing this module costs nothing.
"""

from __future__ import annotations

from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from gradft import CONF_DIR  # the repo's conf/, or the one packaged in the wheel


def search_path() -> list[str]:
    """The config sources of the current run (``file://`` / ``pkg://``), the repo's conf/ when none is known."""
    repo = f"file://{CONF_DIR}"
    if not HydraConfig.initialized():
        return [repo]
    sources = HydraConfig.get().runtime.get("config_sources") or []
    found = [f"{s.schema}://{s.path}" for s in sources if s.schema in ("file", "pkg") and s.provider != "hydra"]
    return [repo, *[s for s in found if s != repo]]


def compose_task(name: str, cfg: Any) -> Any:
    """The ``task`` node that ``task=<name>`` composes, on the current search path; its interpolations (e.g.
    ``${data.domain_root}``) resolve against ``cfg`` (the run's config), so the run's ``data.*`` overrides apply."""
    extra = search_path()[1:]
    overrides = [f"task={name}", *([f"hydra.searchpath=[{','.join(extra)}]"] if extra else [])]
    try:
        if GlobalHydra.instance().is_initialized():  # inside @hydra.main: its own search path (--config-dir) too
            composed = compose("config", overrides=overrides)
        else:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                composed = compose("config", overrides=overrides)
    except Exception as exc:  # hydra's MissingConfigException lists the options it found
        raise ValueError(f"task {name!r} not found on the config search path {search_path()}: {exc}") from exc
    out = cfg.copy()
    with open_dict(out):
        out.task = OmegaConf.to_container(composed.task, resolve=False)
    return out.task

"""Where results go: Weights & Biases (offline by default; online falls back to offline when it cannot connect),
and ``results.json`` + ``config.yaml`` in the run's output directory, written atomically (temp file + rename) so a
crash never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import platform
import socket
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from gradft import PROJECT_ROOT
from gradft.config.nodes import LOGGER_MODES, steps_for
from gradft.stopping import deferred

log = logging.getLogger(__name__)

SEED_KEYS = ("seed", "data_seed")


def atomic_write(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf become null (never a number that looks real)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


CPU_BEFORE_ENV = "the 2-core CPU (before env was recorded)"


def ran_on(results: dict[str, Any]) -> str:
    """The hardware a results.json names; runs from before ``env`` was recorded ran on the project's 2-core CPU."""
    return (results.get("env") or {}).get("hardware", CPU_BEFORE_ENV)


def cpu_name() -> str:
    """This machine's processor by name (/proc/cpuinfo's model name, else what ``platform`` says): torch-free."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        name = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                     if line.startswith("model name")), name)
    return name


def hardware(device: Any) -> dict[str, Any]:
    """Where a run executed (results.json "env"): the processor or GPU by name, its threads, torch and transformers.
    config_key ignores it (the same config computes the same thing anywhere), but floating-point results differ in
    their last bits across hardware, so a mixed grid says which cells ran where (``make compute`` sums per name)."""
    import torch
    import transformers

    name = torch.cuda.get_device_name(device) if getattr(device, "type", str(device)) == "cuda" else cpu_name()
    return {"device": getattr(device, "type", str(device)), "hardware": name, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__}


def write_results(out_dir: str | Path, results: dict[str, Any], cfg: DictConfig) -> Path:
    out = Path(out_dir)
    # an old results.json goes first and the new one is written last (it carries its config's key): a crash or a full
    # disk in between leaves a folder that is not done, never a new config.yaml beside an old result (resultfile)
    (out / "results.json").unlink(missing_ok=True)
    atomic_write(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    atomic_write(out / "results.json", json.dumps(_clean(results), indent=2, sort_keys=True))
    return out / "results.json"


# where the data is read from (its files' sha256 are results.json "data"), and options at their neutral value (added
# after results were committed: a result without the key computed exactly what the neutral value computes)
# (a file task's ``root`` too: it resolves from data.domain_root or names the user's folder)
LOCATION_KEYS = (("data", "superglue_root"), ("data", "fewglue_root"), ("data", "domain_root"), ("data", "source"),
                 ("task", "root"))
NEUTRAL = {("trainer", "precision"): "fp32", ("data", "select"): "task", ("trainer", "stop"): "fixed",
           ("trainer", "grad_accum"): 1, ("trainer", "gradient_checkpointing"): False, ("metrics", "sketch"): "auto"}
# options read only when another option is off its neutral value: dropped with it (data.select_size without
# data.select=pool, trainer.patience without trainer.stop=early compute nothing different)
ONLY_WITH = {("data", "select_size"): ("data", "select"), ("trainer", "patience"): ("trainer", "stop")}


def config_key(cfg: DictConfig | dict, drop: tuple[str, ...] = SEED_KEYS) -> str:
    """A short hash of what a run computes: the resolved config without ``drop``, logger, paths, hydra, save,
    trainer.threads/device, the data's location, options at their neutral value and, with head=classifier, the
    task's prompt (it is not read); the training length as its step count, however it was given. The same in any
    checkout."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else copy.deepcopy(cfg)
    for k in (*drop, "logger", "paths", "hydra", "save"):  # save: what a run writes out, not what it computes
        c.pop(k, None)
    for k in ("threads", "device"):  # where a run executes does not change what it computes
        c.get("trainer", {}).pop(k, None)
    for group, key in LOCATION_KEYS:
        c.get(group, {}).pop(key, None)
    if c.get("head", "classifier") == "classifier":
        c.get("task", {}).pop("prompt", None)  # a new classifier head never reads the task's prompt
    for (group, key), neutral in NEUTRAL.items():
        if c.get(group, {}).get(key, neutral) == neutral:
            c.get(group, {}).pop(key, None)
    for (group, key), (g2, k2) in ONLY_WITH.items():
        if k2 not in c.get(g2, {}):  # its governing option is at its neutral value
            c.get(group, {}).pop(key, None)
    tr = c.get("trainer", {})
    if {"steps", "epochs", "max_steps", "batch_size"} <= tr.keys() and "shots" in c:
        # trainer.steps=40 and epochs=10 of 32 shots / batch 8 compute the same run: the key holds the count
        tr["steps"] = steps_for(tr, int(c["shots"]))
        del tr["epochs"], tr["max_steps"]
    return hashlib.sha1(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _can_reach_wandb(timeout: float = 3.0) -> bool:
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def resolve_mode(mode: str) -> str:
    """``online`` without a key or without a connection falls back to ``offline`` in seconds, and says so."""
    if mode not in LOGGER_MODES:
        raise ValueError(f"logger.mode={mode!r}: must be one of {', '.join(LOGGER_MODES)}")
    if mode == "online" and not (_has_key() and _can_reach_wandb()):
        log.warning("W&B online mode: no API key or no connection to W&B; logging offline instead "
                    "(upload later with `wandb sync <run dir>`)")
        return "offline"
    return mode


class Tracker:
    """A W&B run (or nothing, with ``logger.mode=disabled``) that is always finished, with exit code 1 on failure."""

    def __init__(self, cfg: DictConfig, out_dir: Path):
        self.run = None
        lcfg = cfg.logger
        mode = resolve_mode(lcfg.mode)
        if mode == "disabled":
            return
        import wandb

        group = lcfg.get("group") or f"{cfg.method.name}-{cfg.task.name}-k{cfg.shots}-{config_key(cfg)}"
        out_dir.mkdir(parents=True, exist_ok=True)  # W&B warns "git root <dir> does not exist" for a missing dir
        repo = PROJECT_ROOT  # None for an installed wheel
        git = {"git_root": str(repo)} if repo and (repo / ".git").exists() else {"disable_git": True}
        with deferred():  # a signal inside W&B's calls is delivered after them: W&B is never left half-done
            self.run = wandb.init(
                project=lcfg.project, entity=lcfg.get("entity"), mode=mode, dir=str(out_dir), group=group,
                job_type=cfg.method.name, name=f"{cfg.method.name}-{cfg.task.name}-k{cfg.shots}-s{cfg.seed}",
                tags=list(lcfg.get("tags") or []), config=OmegaConf.to_container(cfg, resolve=True),
                reinit="finish_previous", settings=wandb.Settings(init_timeout=30, silent=True, **git),
            )

    def log(self, values: dict[str, float], step: int) -> None:
        if self.run is not None:
            with deferred():
                self.run.log(values, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            with deferred():
                for k, v in values.items():
                    self.run.summary[k] = v

    def finish(self, failed: bool) -> None:
        if self.run is not None:
            with deferred():
                self.run.finish(exit_code=1 if failed else 0)
            self.run = None

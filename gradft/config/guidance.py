"""The guidance's config (``conf/guidance/structured.yaml``) as a dataclass that validates itself, torch-free so that
``python -m gradft`` refuses a bad guidance value before torch is imported (``gradft.config.schema``). Its defaults
are the yaml's: ``GuidanceConfig.from_yaml(**overrides)`` is the one way to get them without Hydra."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml
from omegaconf import Container, OmegaConf

from gradft.config.nodes import Node

D_PRIORS = ("init", "ema", "source")
MODES = ("hessian", "update")
# Bumped when a fix changes what a guided run computes from the same config values. conf/guidance/structured.yaml
# carries it, so it is part of every guided cell's config_key: a grid never counts an older version's cell as done,
# and the report leaves older guided results out by name (``superseded``). Baselines (guidance=none) are untouched.
#   1: up to commit c94c6db (2026-12-05): the running ‖g‖ (relative τ) and the EMA d_prior followed the *guided*
#      gradient g + H·v, a feedback loop (issue 27)
#   2: they follow the task gradient g; trust region on ‖H·v‖; guidance.mode=update
GUIDANCE_VERSION = 2
VERSION_2_TIME = 1796601600.0  # 2026-12-07 00:00 UTC: an error.json written before it without a version is version 1
HVPS = ("finite_difference", "central", "sub_batch", "double_backward")


@dataclass
class GuidanceConfig(Node):
    """``guidance:`` (conf/guidance/structured.yaml says what each field means, and holds every default). Build it
    with ``from_cfg(cfg.guidance)`` from a composed config, or ``from_yaml(**overrides)`` without Hydra."""

    YAML: ClassVar = ("guidance/structured.yaml", None)
    name: str
    version: int  # see GUIDANCE_VERSION; a config naming another version is refused
    mode: str  # hessian: ∇L_total = g + H·v | update: the terms reshape g itself (docs/guidance.md)
    lambda1: float  # λ1, direction term
    lambda2: float  # λ2, magnitude term
    tau: float  # τ; with tau_mode=relative, a multiple of the running mean ‖g‖
    tau_mode: str  # absolute | relative
    lambda3: float  # λ3, cross-task term (needs source_task)
    d_prior: str  # init | ema | source
    ema_beta: float  # d_prior=ema and the running ‖g‖ of tau_mode=relative
    hvp: str  # finite_difference | central | sub_batch | double_backward
    hvp_batch: int  # sub_batch: the m examples of the batch the difference is taken on
    fd_r: float | None  # finite-difference step along v̂; None: FD_R for the estimator and compute dtype
    max_hv_ratio: float | None  # hessian: trust region ‖H·v‖ ≤ κ‖g‖ (counted when it binds); None: off
    every: int  # guide 1 step in `every`
    warmup: int  # plain steps before guidance starts
    eps: float  # ‖g‖ below this: no direction to regularise, the step is plain (counted)
    source_task: str | None  # e.g. cb: its k-shot gradient is d_prior=source and the λ3 reference
    source_refresh: int  # recompute the source gradient every this many steps
    source_label_map: dict | None  # source label -> target label, when the label sets differ

    @classmethod
    def from_cfg(cls, node: Any) -> GuidanceConfig:
        """Every key of the node is a field (a key that is not one is a TypeError, naming it)."""
        values = OmegaConf.to_container(node, resolve=True) if isinstance(node, Container) else dict(node)
        return cls(**values)

    def __post_init__(self) -> None:
        if self.version != GUIDANCE_VERSION:
            raise ValueError(f"guidance.version={self.version!r}: this gradft computes version {GUIDANCE_VERSION} "
                             "(gradft/config/guidance.py GUIDANCE_VERSION says what changed; version 1 is commit "
                             "c94c6db: `git worktree add ../gradft-v1 c94c6db`)")
        for key in ("lambda1", "lambda2", "lambda3", "tau", "ema_beta"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
                raise ValueError(f"guidance.{key}={v!r}: must be a finite number ≥ 0")
        for key in ("fd_r", "eps", "max_hv_ratio"):
            v = getattr(self, key)
            if key in ("fd_r", "max_hv_ratio") and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
                raise ValueError(f"guidance.{key}={v!r}: must be a finite number > 0")
        for key in ("every", "source_refresh", "hvp_batch"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"guidance.{key}={v!r}: must be an integer ≥ 1")
        if not 0 <= self.ema_beta < 1:
            raise ValueError(f"guidance.ema_beta={self.ema_beta!r}: must be in [0, 1)")
        if self.mode not in MODES:
            raise ValueError(f"guidance.mode={self.mode!r}: must be one of {', '.join(MODES)}")
        if self.mode == "update":
            for key in ("lambda1", "lambda2", "lambda3"):
                if getattr(self, key) > 1:
                    raise ValueError(f"guidance.{key}={getattr(self, key)!r}: with guidance.mode=update it is a "
                                     "fraction of the way to the target, in [0, 1]")
        if self.d_prior not in D_PRIORS:
            raise ValueError(f"guidance.d_prior={self.d_prior!r}: must be one of {', '.join(D_PRIORS)}")
        if self.hvp not in HVPS:
            raise ValueError(f"guidance.hvp={self.hvp!r}: must be one of {', '.join(HVPS)}")
        if self.tau_mode not in ("absolute", "relative"):
            raise ValueError(f"guidance.tau_mode={self.tau_mode!r}: must be absolute or relative")
        if (self.d_prior == "source" or self.lambda3 > 0) and not self.source_task:
            raise ValueError("guidance.source_task is required when d_prior=source or lambda3 > 0 (e.g. cb)")

    @property
    def needs_source(self) -> bool:
        return self.d_prior == "source" or self.lambda3 > 0


def superseded(results: dict) -> bool:
    """A guided results.json computed by an older guidance version (no ``guidance_version``: version 1)."""
    return results.get("guidance", "none") != "none" and results.get("guidance_version", 1) != GUIDANCE_VERSION


def guidance_fields(cfg) -> dict:
    """What an error.json records of a run's guidance, so that the report can tell a superseded one."""
    g = cfg.guidance
    return {"guidance": g.name, **({"guidance_version": g.get("version", 1)} if g.name != "none" else {})}


def superseded_run(run_dir) -> bool:
    """A run folder without results.json (a diverged run's error.json) that is guided and of an older guidance
    version: superseded like its results would be. Read from error.json's ``guidance``/``guidance_version`` (written
    since version 2), else its config.yaml, else — error.json files written before version 2 (2026-12-07) record
    neither — by its time and the method's name (gradft's guided methods are ``ours*``)."""
    d = Path(run_dir)
    try:
        e = json.loads((d / "error.json").read_text())
    except (OSError, ValueError):
        e = {}
    if isinstance(e, dict) and "guidance" in e:
        return e["guidance"] != "none" and e.get("guidance_version", 1) != GUIDANCE_VERSION
    try:
        g = (yaml.safe_load((d / "config.yaml").read_text()) or {}).get("guidance") or {}
        return isinstance(g, dict) and g.get("name", "none") != "none" and g.get("version", 1) != GUIDANCE_VERSION
    except (OSError, ValueError, AttributeError):
        if not isinstance(e, dict) or not e.get("time", VERSION_2_TIME) < VERSION_2_TIME:
            return False
        return str(e.get("method") or d.parent.parent.name).startswith("ours")

"""The sweep spec (``sweeps/*.yaml``) and the Optuna objects it builds: the sampler (seeded per trial), the pruner
and the storage (SQLite here, PostgreSQL to scale out: docs/sweeps.md), whose heartbeat fails the trials of killed
workers. ``gradft.sweep`` runs studies with them; ``gradft.tuned`` reads finished ones."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from omegaconf import OmegaConf

log = logging.getLogger("gradft.sweep")
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "grid": "GridSampler", "qmc": "QMCSampler",
            "gp": "GPSampler"}
PRUNERS = {"none": "NopPruner", "median": "MedianPruner", "percentile": "PercentilePruner",
           "hyperband": "HyperbandPruner", "halving": "SuccessiveHalvingPruner", "threshold": "ThresholdPruner"}


@dataclass
class Spec:
    """A sweep yaml. Keys are documented in sweeps/ours_rte.yaml."""
    study_name: str
    space: dict[str, dict[str, Any]]
    n_trials: int = 20
    base: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=lambda: ["rte"])
    n_seeds: int = 3
    data_seed: str | int = "seed"
    seed: int = 0
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe"})
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "none"})
    storage: str | None = None
    max_failures: int | None = None
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    controls: list[dict[str, Any]] = field(default_factory=list)  # run first, once; may leave the space (λ = 0)
    heartbeat: dict[str, Any] = field(default_factory=lambda: {"interval": 30, "grace_period": 120})
    out_dir: str = "outputs/sweeps"
    prune_on: str = "steps"  # steps: select accuracy every eval.select_every steps | runs: running mean after each run
    # trials added after a best point sat at the edge of its range and the range was widened (issue 11's rule: the
    # range was wrong, continue the study); they are part of n_trials, and `gradft.tuned` checks that n_trials -
    # widened is the same for every method of a comparison, and prints both
    widened: int = 0

    def __post_init__(self) -> None:
        self.storage = self.storage or f"sqlite:///{self.out_dir}/{self.study_name}.db"
        self.max_failures = self.n_trials if self.max_failures is None else self.max_failures
        for name, d in self.space.items():
            if d.get("type") not in ("float", "int", "categorical"):
                raise ValueError(f"space.{name}.type={d.get('type')!r}: must be float, int or categorical")
        if self.sampler.get("name", "tpe") not in SAMPLERS or self.pruner.get("name", "none") not in PRUNERS:
            raise ValueError(f"sampler must be one of {list(SAMPLERS)}, pruner one of {list(PRUNERS)}")
        if self.prune_on not in ("steps", "runs"):
            raise ValueError(f"prune_on={self.prune_on!r}: must be steps or runs")
        every = [o.split("=", 1)[1] for o in self.base if o.startswith("eval.select_every=")]
        pruned = self.pruner.get("name", "none") != "none" and self.prune_on == "steps"
        if pruned and not (every and int(every[-1]) > 0):
            raise ValueError("a pruner needs intermediate values: add eval.select_every=N (N>0) to base, "
                             "or prune_on: runs")
        if not 0 <= self.widened < self.n_trials:
            raise ValueError(f"widened={self.widened}: must be at least 0 and below n_trials={self.n_trials}")
        if not (self.heartbeat or {}).get("interval"):
            raise ValueError("heartbeat.interval is required: it is how the trials of killed workers are failed")


def load_spec(path: str | Path, **updates: Any) -> Spec:
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    raw.update({k: v for k, v in updates.items() if v is not None})
    try:
        return Spec(**raw)
    except TypeError as e:
        raise ValueError(f"{path}: {e}") from None


def derive_seed(seed: int, number: int) -> int:
    """A sampler seed per trial number: reproducible for one worker, distinct across resumes and workers."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def make_sampler(spec: Spec, seed: int) -> optuna.samplers.BaseSampler:
    kw = {k: v for k, v in spec.sampler.items() if k != "name"}
    cls = getattr(optuna.samplers, SAMPLERS[spec.sampler.get("name", "tpe")])
    if cls is optuna.samplers.GridSampler:
        grid = {k: d["choices"] if d["type"] == "categorical" else list(range(d["low"], d["high"] + 1,
                                                                              d.get("step", 1)))
                for k, d in spec.space.items()}
        return cls(grid, seed=seed)
    return cls(seed=seed, **kw)


def make_pruner(spec: Spec) -> optuna.pruners.BasePruner:
    kw = {k: v for k, v in spec.pruner.items() if k != "name"}
    return getattr(optuna.pruners, PRUNERS[spec.pruner.get("name", "none")])(**kw)


def make_storage(spec: Spec) -> optuna.storages.RDBStorage:
    url = spec.storage
    kw: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        try:
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"storage={url!r} cannot be opened: {e}") from e
        kw = {"connect_args": {"timeout": 120}}  # workers wait for SQLite's write lock instead of failing
    hb = spec.heartbeat or {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kw, heartbeat_interval=hb.get("interval"),
                                          grace_period=hb.get("grace_period"),
                                          heartbeat_stale_trial_callback=_stale_failed)
    except Exception as e:  # a driver missing, a server down, a path that cannot be created: one clear line
        hint = (" (PostgreSQL: the `postgres` extra installs the psycopg driver, used by postgresql+psycopg://...)"
                if url.startswith("postgres") else "")
        raise ValueError(f"storage={url!r} cannot be opened{hint}: {str(e).splitlines()[0]}") from e


def _stale_failed(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Optuna's heartbeat callback: a RUNNING trial whose worker stopped beating (killed) was just marked FAIL."""
    log.warning("trial #%d (worker %s) had no heartbeat for over the grace period: marked FAIL; its point is "
                "proposed again only if it is an enqueued reference point", trial.number,
                trial.user_attrs.get("worker", "?"))

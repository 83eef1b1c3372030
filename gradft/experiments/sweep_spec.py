"""The sweep spec (``sweeps/*.yaml``), checked before the first trial (``check_space``: a non-empty space of config
keys that compose), and the Optuna objects it builds: the sampler (seeded per trial), the pruner and the storage
(SQLite here, PostgreSQL to scale out: docs/sweeps.md; a connect timeout, no password in any message), whose
heartbeat fails the trials of killed workers. ``gradft.experiments.sweep`` runs studies with them;
``gradft.experiments.tuned`` reads finished ones. A run's config is composed by ``gradft.experiments.launch``."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from sqlalchemy.engine import make_url

from gradft.config.schema import check_override_keys, validate
from gradft.experiments.launch import compose_run

log = logging.getLogger("gradft.experiments.sweep")
CONNECT_TIMEOUT_S = int(os.environ.get("GRADFT_STORAGE_CONNECT_TIMEOUT", "10"))  # a server URL's connect timeout
STATEMENT_TIMEOUT_S = 300  # PostgreSQL: a statement running longer is cancelled
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
    # range was wrong, continue the study); they are part of n_trials, and `gradft.experiments.tuned` checks that
    # n_trials -
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


def _sample(d: dict[str, Any]) -> Any:
    """A value the parameter can take (its low end, or its first choice): enough to compose the config once."""
    return d["choices"][0] if d["type"] == "categorical" else d["low"]


def _value(v: Any) -> str:
    if v is None or isinstance(v, bool):
        return str(v).lower().replace("none", "null")
    return repr(v) if isinstance(v, float) else str(v)


def check_space(spec: Spec, extra: list[str] = (), compose: bool = True) -> None:
    """Before the first trial: the search space is not empty, every searched name is a config key, and (``compose``:
    torch is imported) composes into the run config of every task (each parameter at a sample value, with the base
    and extra overrides) and passes the run's own checks; a ValueError of one line (naming the key, with a "did you
    mean") otherwise."""
    if not spec.space:
        raise ValueError(f"study {spec.study_name}: the search space is empty: every trial would run the same config; "
                         "list the parameters to search under space: (sweeps/ours_rte.yaml shows how)")
    params = [f"{k}={_value(_sample(d))}" for k, d in spec.space.items()]
    overrides = ["eval.splits=[select]", *spec.base, *extra, *params]
    try:
        check_override_keys([*spec.base, *extra, *params])
    except ValueError as e:
        raise ValueError(f"study {spec.study_name}: {e} (sweep spec: space or base)") from None
    for task in spec.tasks if compose else ():
        try:
            validate(compose_run([*overrides, f"task={task}", "seed=0", "data_seed=0", "paths.output_dir=."]))
        except (ValueError, HydraException, OmegaConfBaseException) as e:
            line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"study {spec.study_name}, task {task}, with {' '.join(params)}: {line}") from None


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


def mask(url: str) -> str:
    """The storage URL with its password as ``***``: the only form any message or log line shows."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 — not a URL SQLAlchemy parses: hide whatever sits between ':' and '@'
        return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


def _scrub(text: str, url: str) -> str:
    """``text`` (a driver's error) without the URL's password, however it is quoted in there."""
    try:
        password = make_url(url).password
    except Exception:  # noqa: BLE001
        password = None
    text = text.replace(url, mask(url))
    return re.sub(rf"(?<![\w]){re.escape(password)}(?![\w])", "***", text) if password else text


def make_storage(spec: Spec) -> optuna.storages.RDBStorage:
    """The study's storage. A server URL gets a connect timeout (``CONNECT_TIMEOUT_S``: a server that accepts
    connections but never answers fails in seconds, not minutes) and, on PostgreSQL, a statement timeout; errors
    name the URL without its password."""
    url = spec.storage
    kw: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        try:
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"storage={mask(url)!r} cannot be opened: {e}") from e
        kw = {"connect_args": {"timeout": 120}}  # workers wait for SQLite's write lock instead of failing
    elif url.startswith(("postgres", "mysql")):
        kw = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
        if url.startswith("postgres"):  # a query the server never finishes fails too (milliseconds)
            kw["connect_args"]["options"] = f"-c statement_timeout={STATEMENT_TIMEOUT_S * 1000}"
    hb = spec.heartbeat or {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kw, heartbeat_interval=hb.get("interval"),
                                          grace_period=hb.get("grace_period"),
                                          heartbeat_stale_trial_callback=_stale_failed)
    except Exception as e:  # a driver missing, a server down, a path that cannot be created: one clear line
        driver = isinstance(e, ImportError) or "module" in str(e).lower()  # no driver, not a server that is down
        hint = (" (PostgreSQL: the `postgres` extra installs the psycopg driver, used by postgresql+psycopg://...)"
                if url.startswith("postgres") and driver else "")
        if "timeout" in str(e).lower():
            hint = f" (no answer within {CONNECT_TIMEOUT_S} s: GRADFT_STORAGE_CONNECT_TIMEOUT sets it)"
        first = _scrub(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, url)
        raise ValueError(f"storage={mask(url)!r} cannot be opened{hint}: {first}") from None


def _stale_failed(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Optuna's heartbeat callback: a RUNNING trial whose worker stopped beating (killed) was just marked FAIL."""
    log.warning("trial #%d (worker %s) had no heartbeat for over the grace period: marked FAIL; its point is "
                "proposed again only if it is an enqueued reference point", trial.number,
                trial.user_attrs.get("worker", "?"))

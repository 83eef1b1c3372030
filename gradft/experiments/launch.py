"""The one launch path of grids and sweeps: what each of their runs is, and the processes that run them.

Owns ``compose_run`` (one run's config from overrides, composed exactly as ``python -m gradft`` composes it),
``task_seeds`` (a run set's (task, seed, data seed) cells, and the ``data_seed`` rule: ``seed`` draws each seed its
own shots, an int draws the same shots for every seed), the torch threads each of N workers gets
(``set_worker_threads``), and spawned workers that a SIGTERM to their parent stops (``run_workers``: passed on, a
grace period, then killed). Light to import (hydra, no torch): a sweep that has nothing to run imports it too.
"""

from __future__ import annotations

import copy
import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from itertools import product
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from gradft import CONF_DIR

log = logging.getLogger("gradft.experiments.launch")


def compose_run(overrides: list[str]) -> DictConfig:
    """One run's config, composed exactly as ``python -m gradft <overrides>`` does."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    # as @hydra.main does: the run can then find tasks on this search path (hydra.searchpath=[file:///my_conf])
    HydraConfig.instance().set_config(copy.deepcopy(cfg))
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def task_seeds(tasks: Iterable[str], seeds: Iterable[int], data_seed: str | int = "seed"
               ) -> list[tuple[str, int, int]]:
    """(task, seed, data seed) of every task × seed, tasks outermost: a grid's cells of one method and k run in this
    order, a sweep trial's runs too (its intermediate values are reported in it). ``data_seed="seed"``: each seed its
    own draw of shots (data seed = seed); an int: that one draw for every seed."""
    return [(task, int(seed), int(seed) if data_seed == "seed" else int(data_seed))
            for task, seed in product(tasks, seeds)]


def set_worker_threads(n_workers: int) -> None:
    """cores // n_workers torch threads; set here, not by trainer.threads, so config_key ignores the worker count."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // n_workers))


def run_workers(target: Callable[..., Any], args: list[tuple], names: list[str] | None = None,
                grace_s: float = 60.0) -> list[int | None]:
    """One spawned process per ``args`` tuple, joined; their exit codes. SIGTERM to this process (kill, a scheduler,
    ``timeout``) must not leave workers running on: it is passed on to them (a run records its stop and exits), they
    get ``grace_s`` to finish, the stragglers are killed, and this process exits 143. Grids and sweeps use it."""
    ctx = mp.get_context("spawn")
    procs: list[Any] = []

    def stop(signum: int, frame: Any) -> None:
        log.warning("SIGTERM: stopping %d worker process(es)", sum(pr.is_alive() for pr in procs))
        for pr in procs:
            pr.terminate()
        deadline = time.time() + grace_s
        for pr in procs:
            pr.join(max(0.0, deadline - time.time()))
            if pr.is_alive():
                pr.kill()
                pr.join()
        sys.exit(143)

    previous = signal.signal(signal.SIGTERM, stop)  # before the first start: no window for an orphan
    try:
        for i, a in enumerate(args):
            procs.append(ctx.Process(target=target, args=a, name=names[i] if names else None))
            procs[-1].start()
        for pr in procs:
            pr.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return [pr.exitcode for pr in procs]

"""Worker processes shared by grids and sweeps: the torch threads each of N workers gets, and spawned workers that
a SIGTERM to their parent stops (passed on, a grace period, then killed)."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("gradft.experiments.grid")


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

"""The command line: ``python -m gradft method=lora task=rte shots=32 seed=1`` (any Hydra override).

A thin ``@hydra.main`` around ``gradft.run.run``. The composed config is checked (``gradft.config.schema.validate``)
before
torch, transformers, peft, datasets or wandb are imported, so a bad value exits 2 within seconds with a one-line
message; an unknown key says what it may have meant. SIGINT and SIGTERM stop a run with one log line (exit 130 and
143), its W&B run finished as failed and no results.json written. A folder that cannot be written (disk full,
read-only, no permission: Hydra's run folder, the W&B folder, results.json) is one line naming the file, exit 1;
results are written atomically, so no partial file is left. ``+preset=<grid>`` applies a grid file's tuned
overrides for the chosen method before Hydra composes (``gradft.config.preset``).
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import socket
import sys
import time

import hydra
from hydra._internal.utils import run_and_report
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gradft import CONF_DIR
from gradft.config.guidance import guidance_fields
from gradft.config.preset import expand_preset
from gradft.config.schema import check_override_keys, validate

log = logging.getLogger("gradft")
# the errors of a file system that refuses writes: one line, not a traceback
_USER_FULL_ERROR = False  # the user set HYDRA_FULL_ERROR: full tracebacks, as Hydra gives them
IO_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}


def io_error(e: BaseException) -> OSError | None:
    """The OSError of a refused write in ``e`` or its causes/contexts (a W&B finaliser failing on a full disk
    chains the original), else None."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in IO_ERRNOS:
            return e
        e = e.__cause__ or e.__context__
    return None


def _run_dir() -> str | None:
    try:
        return HydraConfig.get().runtime.output_dir
    except Exception:  # Hydra failed before its config was set
        return None


def io_message(e: OSError, run_dir: str | None = None) -> str:
    """``cannot write /out/results.json: No space left on device (errno ENOSPC)``: the file, the reason, the fix."""
    where = f" {e.filename}" if e.filename else f" under {run_dir}" if run_dir else ""
    full = e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    hint = "free space or point hydra.run.dir at another disk" if full else \
        "make that folder writable or point hydra.run.dir at one"
    return (f"cannot write{where}: {e.strerror or os.strerror(e.errno)} (errno {errno.errorcode.get(e.errno)}); "
            f"{hint}. No results.json was written")


def _user_error(e: BaseException) -> bool:
    """A bad value, missing data or model, or a diverging run: the message is enough, no traceback."""
    train = sys.modules.get("gradft.train")  # imported with gradft.run; NonFiniteError is a RuntimeError
    return isinstance(e, ValueError) or (train is not None and isinstance(e, train.NonFiniteError))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _main(cfg: DictConfig) -> float | None:
    if not _USER_FULL_ERROR:  # set by main() for Hydra's own setup only: not for this run's child processes
        os.environ.pop("HYDRA_FULL_ERROR", None)
    try:
        validate(cfg)
        from gradft.run import run  # the heavy imports: only once the config is known to be good

        results = run(cfg, out_dir=HydraConfig.get().runtime.output_dir)
    except KeyboardInterrupt as e:  # SIGINT, or SIGTERM (gradft.run.RunInterrupted): one line, no traceback
        log.warning("%s", e or "interrupted before training; no results written")
        sys.exit(getattr(e, "exit_code", 130))
    except Exception as e:
        bad = io_error(e)
        if bad is not None:  # Hydra's own writes fail before this function: main() says those
            print(f"gradft: error: {io_message(bad, _run_dir())}", file=sys.stderr)
            sys.exit(1)
        if not _user_error(e):
            raise
        if type(e).__name__ == "NonFiniteError":  # an outcome, not a typo: the report lists it
            _write_diverged(cfg, e)
        log.error("%s: %s", type(e).__name__, e)  # into the run's log file
        print(f"gradft: error: {e}", file=sys.stderr)
        sys.exit(2)
    return results["metrics"].get("accuracy")


def _write_diverged(cfg: DictConfig, e: BaseException) -> None:
    """``error.json`` with ``diverged: true`` in the run folder, as a grid cell's: the report shows the run."""
    from gradft.tracking import atomic_write, config_key

    shots = int(cfg.shots)
    atomic_write(f"{_run_dir()}/error.json", json.dumps({
        "time": time.time(), "error": repr(e), "pid": os.getpid(), "host": socket.gethostname(), "diverged": True,
        "seed": cfg.seed, "data_seed": cfg.data_seed, "config_key": config_key(cfg), "task": cfg.task.name,
        "method": cfg.method.name if shots else "zero-shot", "model": cfg.model.name, "shots": shots,
        "head": cfg.get("head", "classifier"), "table_task": "dir" not in cfg.task, **guidance_fields(cfg)}))


def main() -> None:
    """Entry point (``gradft`` script and ``python -m gradft``): unknown keys fail before Hydra composes."""
    try:
        sys.argv[1:], note = expand_preset(sys.argv[1:])  # +preset=<grid file>: its overrides for this method
        if note:
            print(f"gradft: {note}", file=sys.stderr)
        check_override_keys(sys.argv[1:])
    except ValueError as e:
        print(f"gradft: error: {e}", file=sys.stderr)
        sys.exit(2)
    logging.raiseExceptions = False  # a log file on a full disk: no "--- Logging error ---" traceback per line
    global _USER_FULL_ERROR
    full = _USER_FULL_ERROR = "HYDRA_FULL_ERROR" in os.environ
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra's setup errors (its run folder) reach this function
    try:
        _main()
    except Exception as e:
        bad = io_error(e)
        if bad is None and not full:
            os.environ.pop("HYDRA_FULL_ERROR", None)
            run_and_report(functools.partial(_raise, e))  # Hydra's usual (compact or trimmed) report, exit 1
        if bad is None:
            raise
        print(f"gradft: error: {io_message(bad, _run_dir())}", file=sys.stderr)
        sys.exit(1)


def _raise(e: BaseException) -> None:
    raise e


if __name__ == "__main__":
    main()

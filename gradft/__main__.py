"""The command line: ``python -m gradft method=lora task=rte shots=32 seed=1`` (any Hydra override).

A thin ``@hydra.main`` around ``gradft.run.run``. The composed config is checked (``gradft.config.validate``) before
torch, transformers, peft, datasets or wandb are imported, so a bad value exits 2 within seconds with a one-line
message; an unknown key says what it may have meant. SIGINT and SIGTERM stop a run with one log line (exit 130 and
143), its W&B run finished as failed and no results.json written.
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gradft.config import CONF_DIR, check_override_keys, validate

log = logging.getLogger("gradft")


def _user_error(e: BaseException) -> bool:
    """A bad value, missing data or model, or a diverging run: the message is enough, no traceback."""
    train = sys.modules.get("gradft.train")  # imported with gradft.run; NonFiniteError is a RuntimeError
    return isinstance(e, ValueError) or (train is not None and isinstance(e, train.NonFiniteError))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _main(cfg: DictConfig) -> float | None:
    try:
        validate(cfg)
        from gradft.run import run  # the heavy imports: only once the config is known to be good

        results = run(cfg, out_dir=HydraConfig.get().runtime.output_dir)
    except KeyboardInterrupt as e:  # SIGINT, or SIGTERM (gradft.run.RunInterrupted): one line, no traceback
        log.warning("%s", e or "interrupted before training; no results written")
        sys.exit(getattr(e, "exit_code", 130))
    except Exception as e:
        if not _user_error(e):
            raise
        log.error("%s: %s", type(e).__name__, e)  # into the run's log file
        print(f"gradft: error: {e}", file=sys.stderr)
        sys.exit(2)
    return results["metrics"].get("accuracy")


def main() -> None:
    """Entry point (``gradft`` script and ``python -m gradft``): unknown keys fail before Hydra composes."""
    try:
        check_override_keys(sys.argv[1:])
    except ValueError as e:
        print(f"gradft: error: {e}", file=sys.stderr)
        sys.exit(2)
    _main()


if __name__ == "__main__":
    main()

"""The command line: ``python -m gradft method=lora task=rte shots=32 seed=1`` (any Hydra override).

A thin ``@hydra.main`` around ``gradft.run.run``; a bad value exits non-zero with a one-line message.
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gradft.data import DataError
from gradft.models import ModelError
from gradft.run import run
from gradft.train import NonFiniteError

log = logging.getLogger("gradft")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        results = run(cfg, out_dir=HydraConfig.get().runtime.output_dir)
    except (ValueError, DataError, ModelError, NonFiniteError) as e:  # user-facing errors: no traceback
        log.error("%s: %s", type(e).__name__, e)  # into the run's log file
        print(f"gradft: error: {e}", file=sys.stderr)
        sys.exit(2)
    return results["metrics"].get("accuracy")


if __name__ == "__main__":
    main()

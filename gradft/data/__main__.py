"""``python -m gradft.data task=<name> [shots=32] [--config-dir ./my_conf]``: inspect a task, load no model.

The same composition as ``python -m gradft`` (conf/config.yaml, any override, a user's config dir), then
`gradft.data.inspect.describe`. A bad task config or bad data exits 2 with the one-line message.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from gradft import CONF_DIR
from gradft.data.formats import DataError


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    from gradft.data import load_task
    from gradft.data.inspect import describe

    try:
        task = load_task(cfg.task, cfg.data)
    except (DataError, ValueError) as e:
        print(f"gradft.data: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(describe(cfg.task, task, int(cfg.shots), cfg.eval.get("max_examples")))


# nothing to keep: no run directory, no .hydra/ folder, no log file
QUIET = ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]



def cli() -> None:
    """Entry point (``gradft-data`` script and ``python -m gradft.data``)."""
    sys.argv += [o for o in QUIET if o.split("=")[0] not in {a.split("=")[0] for a in sys.argv[1:]}]
    main(None)  # hydra.main reads sys.argv  # type: ignore[arg-type]


if __name__ == "__main__":
    cli()

"""``python -m gradft.data task=<name> [shots=32] [--config-dir ./my_conf]``: inspect a task, load no model.

The same composition as ``python -m gradft`` (conf/config.yaml, any override, a user's config dir), the same checks
(``gradft.config.schema.validate``, then ``gradft.data.checks``: the k-shot draw under ``data.balance``, head=lm's label
words, a guidance source task's labels), then `gradft.data.inspect.describe`. Whatever the run would refuse before
loading a model exits 2 here with the run's one-line message.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from gradft import CONF_DIR
from gradft.config.schema import validate
from gradft.data.formats import DataError


def check_like_run(cfg: DictConfig):
    """The task as the run reads it, after every check the run makes before it loads a model."""
    from gradft.data import load_task
    from gradft.data.checks import draw_for_run, source_label_index
    from gradft.data.taskconf import compose_task

    validate(cfg)
    task = load_task(cfg.task, cfg.data)
    draw_for_run(cfg, task)
    g = cfg.guidance
    if g.name != "none" and g.get("source_task") and cfg.shots and cfg.get("head", "classifier") == "classifier" \
            and (g.get("d_prior") == "source" or (g.get("lambda3") or 0) > 0):
        source = load_task(compose_task(g.source_task, cfg), cfg.data)
        source_label_index(source, task, g.source_task, g.get("source_label_map"))
    return task


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    from gradft.data.inspect import describe

    try:
        task = check_like_run(cfg)
    except (DataError, ValueError) as e:
        print(f"gradft.data: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(describe(cfg.task, task, int(cfg.shots), cfg.eval.get("max_examples"), cfg.data.balance))


# nothing to keep: no run directory, no .hydra/ folder, no log file
QUIET = ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]


def cli() -> None:
    """Entry point (``gradft-data`` script and ``python -m gradft.data``)."""
    sys.argv += [o for o in QUIET if o.split("=")[0] not in {a.split("=")[0] for a in sys.argv[1:]}]
    main(None)  # hydra.main reads sys.argv  # type: ignore[arg-type]


if __name__ == "__main__":
    cli()

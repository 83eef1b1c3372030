"""A stopped sweep loses no finished run: interrupted trials run again with their own parameters, and a run already
finished with the very same config and seeds is taken, not recomputed.

A trial stopped by SIGTERM / SIGINT (user attr ``interrupted``), or failed as stale after its worker was killed (no
attr at all), is FAIL: it uses no budget, and without this module its finished runs — up to tasks × seeds − 1 of
them, ~25 worker-minutes on the signal studies — would be lost with it, and the sampler would draw another point.
``retry_interrupted`` enqueues each such trial's parameters once more (user attr ``retry_of``; a control trial keeps
its ``control`` overrides); a trial whose objective raised (user attr ``error``) is a broken point, not retried.
``earlier_run`` is what makes the retry cheap: a run is a pure function of its config and seeds, so a folder of the
study holding a valid result of the same ``config_key``, seed and data_seed (``gradft.experiments.resultfile``) is
copied into the new trial's folder instead of training again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.trial import TrialState

from gradft.experiments import resultfile
from gradft.tracking import atomic_write, config_key

log = logging.getLogger("gradft.sweep")


def retry_interrupted(study: optuna.Study) -> list[int]:
    """Enqueue once more every FAIL trial that was interrupted or went stale (not one whose objective raised, and
    not one already retried); returns the numbers of the trials enqueued again."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    out = []
    for t in trials:
        if t.state != TrialState.FAIL or "error" in t.user_attrs or t.number in retried or not t.params:
            continue
        attrs = {"retry_of": t.number, **({"control": t.user_attrs["control"]} if "control" in t.user_attrs else {})}
        study.enqueue_trial(dict(t.params), user_attrs=attrs, skip_if_exists=False)
        out.append(t.number)
    if out:
        log.info("re-enqueueing interrupted trial(s) %s with their parameters: their finished runs are reused",
                 ", ".join(f"#{n}" for n in out))
    return out


def earlier_run(study_dir: Path, out: Path, cfg: DictConfig, task: str, seed: int, data_seed: int,
                report: Callable[[int, float], None] | None = None) -> dict[str, Any] | None:
    """The result of a run of this config and seeds finished in another trial folder of the study
    (``<study_dir>/trial_*/<task>/s<seed>``), copied into ``out`` (results.json last: it marks the run done), its
    selection curve replayed into ``report`` as the run would have reported it; None when there is none."""
    key = config_key(cfg)
    for d in sorted(study_dir.glob(f"trial_*/{task}/s{seed}")):
        if d.resolve() == out.resolve() or not resultfile.done(d, key, seed, data_seed):
            continue
        out.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "results.json"):
            atomic_write(out / name, (d / name).read_text())
        res = json.loads((out / "results.json").read_text())
        log.info("%s seed %d: reusing the finished run of the same config in %s (select accuracy %s)", task, seed,
                 d, (res.get("select_metrics") or {}).get("accuracy"))
        if report is not None:
            for step, acc in res.get("select_curve") or []:
                if step < int(res["steps"]):
                    report(int(step), float(acc))
        return res
    return None

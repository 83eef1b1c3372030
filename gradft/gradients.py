"""A gradient as one flat vector over a named parameter set, and the operations on it.

Guidance (``guidance.py``) and the gradient metrics (``metrics.py``) both go through ``ParamSpace``, so the two can
never disagree about what ``g`` is. Everything here is plain torch autograd; nothing is model-specific.

Data parallelism (below): Data parallelism for the guided step: averaging a flat gradient over ranks, and the module
under a DDP wrapper.

Owns the one rule that keeps guidance correct under DDP (torchrun, accelerate): every gradient the guidance computes
goes through ``torch.autograd.grad`` on the *unwrapped* module, which DDP's hooks never see, so it is averaged here
explicitly (``all_reduce_mean``) before it is used: g before v is formed or g is reshaped, the shifted gradient of the
finite difference (every rank takes the same shifted step, computes its local shifted gradient, and the average is
the global batch's), and the exact H·v. The result is identical on every rank, so the parameters stay in lockstep.
Plain (unguided) steps use DDP's own all-reduce through ``loss.backward()`` on the wrapped model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

EPS = 1e-12


class ParamSpace:
    """An ordered set of parameters; vectors in this space are flat tensors of length ``numel``."""

    def __init__(self, named: Iterable[tuple[str, nn.Parameter]]):
        seen: set[int] = set()
        self.names: list[str] = []
        self.params: list[nn.Parameter] = []
        for name, p in named:
            if id(p) in seen:  # tied weights (e.g. input/output embeddings) count once
                continue
            seen.add(id(p))
            self.names.append(name)
            self.params.append(p)
        if not self.params:
            raise ValueError("ParamSpace: empty parameter set")
        self.numel = sum(p.numel() for p in self.params)
        self.dtype = torch.promote_types(self.params[0].dtype, torch.float32)

    def __len__(self) -> int:
        return self.numel

    def flatten(self, tensors: Iterable[Tensor | None]) -> Tensor:
        """Concatenate per-parameter tensors (``None`` = zero) into one flat vector (at least fp32: bf16 and fp16
        gradients are upcast so that norms and cosines stay accurate)."""
        parts = [
            torch.zeros(p.numel(), device=p.device, dtype=self.dtype) if t is None else t.reshape(-1).to(self.dtype)
            for p, t in zip(self.params, tensors, strict=True)
        ]
        return torch.cat(parts)

    def split(self, vec: Tensor) -> list[Tensor]:
        """The inverse of ``flatten``: views of ``vec`` shaped like each parameter (in its dtype)."""
        out, i = [], 0
        for p in self.params:
            out.append(vec[i : i + p.numel()].view_as(p).to(p.dtype))
            i += p.numel()
        return out

    def grad(self, loss: Tensor, create_graph: bool = False, retain_graph: bool | None = None) -> Tensor:
        """∇ loss over this space as a flat vector (parameters the loss does not reach give zeros)."""
        grads = torch.autograd.grad(
            loss, self.params, create_graph=create_graph, retain_graph=retain_graph, allow_unused=True
        )
        if create_graph:  # keep the graph: build the flat vector differentiably
            return torch.cat([
                (torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(self.params, grads, strict=True)
            ])
        return self.flatten(grads)

    def read_grads(self) -> Tensor:
        """The ``.grad`` fields of the parameters (after ``loss.backward()``) as a flat vector."""
        return self.flatten(p.grad for p in self.params)

    def write_grads(self, vec: Tensor) -> None:
        """Set every parameter's ``.grad`` from a flat vector."""
        for p, g in zip(self.params, self.split(vec), strict=True):
            p.grad = g.detach().clone()

    def values(self) -> Tensor:
        return self.flatten(p.detach() for p in self.params)

    @contextmanager
    def shifted(self, direction: Tensor, r: float) -> Iterator[None]:
        """Temporarily move θ to θ + r·direction; restores the exact original values (a saved copy, not θ − r·d)."""
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, d in zip(self.params, self.split(direction), strict=True):
                p.add_(d, alpha=r)
        # autocast caches its low-precision copy of each weight for the whole autocast region: a stale copy would
        # make the shifted pass see the unshifted θ (a zero difference under bf16)
        torch.clear_autocast_cache()
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved, strict=True):
                    p.copy_(s)
            torch.clear_autocast_cache()

    @contextmanager
    def requiring_grad(self) -> Iterator[None]:
        """Temporarily mark every parameter of the space trainable (to measure gradients of frozen weights)."""
        before = [p.requires_grad for p in self.params]
        for p in self.params:
            p.requires_grad_(True)
        try:
            yield
        finally:
            for p, b in zip(self.params, before, strict=True):
                p.requires_grad_(b)


def norm(v: Tensor) -> float:
    return float(torch.linalg.vector_norm(v))


def cosine(a: Tensor, b: Tensor) -> float:
    """cos(a, b); 0.0 when either vector is (numerically) zero, so a metric never becomes NaN."""
    na, nb = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    if na <= EPS or nb <= EPS:
        return 0.0
    return float(torch.dot(a, b) / (na * nb))


def unit(v: Tensor) -> Tensor | None:
    """v / ‖v‖, or None when ‖v‖ is (numerically) zero."""
    n = torch.linalg.vector_norm(v)
    if not torch.isfinite(n) or n <= EPS:
        return None
    return v / n


def hvp_finite_difference(
    space: ParamSpace, grad_fn: Callable[[], Tensor], g0: Tensor | None, v: Tensor, r: float, central: bool = False
) -> Tensor:
    """H·v by a difference of gradients along v̂ = v/‖v‖, scaled by ‖v‖:

    forward  (∇L(θ + r·v̂) − ∇L(θ)) · ‖v‖ / r          one extra forward+backward, error O(r) + round-off/r
    central  (∇L(θ + r·v̂) − ∇L(θ − r·v̂)) · ‖v‖ / 2r   two extra, error O(r²) + round-off/r (``g0`` unused)

    ``grad_fn`` must see the same batch and the same dropout masks as the pass that produced ``g0``.
    """
    nv = torch.linalg.vector_norm(v)
    if nv <= EPS:
        return torch.zeros_like(v)
    with space.shifted(v / nv, r):
        g1 = grad_fn()
    if not central:
        return (g1 - g0) * (nv / r)
    with space.shifted(v / nv, -r):
        g2 = grad_fn()
    return (g1 - g2) * (nv / (2 * r))


def hvp_exact(space: ParamSpace, g: Tensor, v: Tensor) -> Tensor:
    """H·v by double backward: ``g`` must have been built with ``create_graph=True``."""
    return space.grad(torch.dot(g, v.detach()), retain_graph=False)


# --- data parallelism ------------------------------------------------------------------------------------

def world_size(group=None) -> int:
    """The number of ranks of ``group`` (1 when torch.distributed is not initialised)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return 1
    return torch.distributed.get_world_size(group)


def all_reduce_mean(group=None) -> Callable[[Tensor], Tensor]:
    """A function that returns the average of a flat tensor over the ranks of ``group`` (a new tensor; the input is
    left as it is). Every rank must call it with a tensor of the same shape, in the same order."""
    def reduce(v: Tensor) -> Tensor:
        out = v.detach().clone()
        torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.SUM, group=group)
        return out / world_size(group)

    return reduce


def is_ddp(model: nn.Module) -> bool:
    return isinstance(model, nn.parallel.DistributedDataParallel)


def unwrap(model: nn.Module) -> nn.Module:
    """The module under a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if is_ddp(model) else model

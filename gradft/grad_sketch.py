"""Gradient metrics whose memory does not grow with the backbone: a streamed CountSketch of g (``metrics.sketch``).

Owns the choice between the two ways ``GradientMonitor`` sees g_t (docs/metrics.md, "Memory"):

- **exact** (every metric space of at most ``EXACT_UP_TO`` parameters under ``metrics.sketch=auto``: MiniLM, SmolLM2
  and every committed result): g_t as one flat fp32 vector, d_task and g_{t−1} kept as flat vectors. Peak ≈ 4 flat
  copies of the space (d_task, g_{t−1}, the per-parameter gradients and their concatenation): 4 × 4 B × N.
- **sketch** (larger spaces, e.g. a 7B backbone): the backward runs with a hook on every parameter that folds its
  gradient into (a) the exact sum of squares — so ‖g_t‖, hence gradient stability, is exact — and (b) a CountSketch
  of ``SKETCH_DIM`` buckets (each coordinate added to one seeded bucket with a seeded sign), then frees it. cos(g_t,
  d_task) and cos(g_t, g_{t−1}) are the cosines of the sketches (d_task's sketch is the same linear map of the k-shot
  gradient): unbiased inner products, error ≈ √((1 + cos²)/SKETCH_DIM) ≈ 1e-3. Memory: three 4 MB sketches plus the
  largest single parameter's gradient, whatever N is.

The hashes are regenerated per chunk from (seed, parameter index, chunk) on the gradient's device, never stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from gradft.gradients import ParamSpace
    from gradft.metrics import GradientMonitor

SKETCH_DIM = 2**20  # buckets: 4 MB per fp32 sketch; cosine error ≈ 1e-3
EXACT_UP_TO = 2**28  # metrics.sketch=auto: metric spaces of at most 268M parameters stay exact (1 GB per fp32 copy)
CHUNK = 2**22  # coordinates hashed at once (a 32 MB int64 temporary)
MODES = ("auto", "exact", "sketch")


def use_sketch(mode: str, numel: int) -> bool:
    """``metrics.sketch``: auto sketches above ``EXACT_UP_TO`` parameters; exact and sketch force one way."""
    if mode not in MODES:
        raise ValueError(f"metrics.sketch={mode!r}: must be one of {', '.join(MODES)}")
    return mode == "sketch" or (mode == "auto" and numel > EXACT_UP_TO)


class CountSketch:
    """A seeded linear map R^N -> R^dim, applied one parameter tensor at a time."""

    def __init__(self, dim: int = SKETCH_DIM, seed: int = 0, chunk: int = CHUNK):
        self.dim, self.seed, self.chunk = dim, seed, chunk

    def zeros(self, device: torch.device) -> Tensor:
        return torch.zeros(self.dim, dtype=torch.float32, device=device)

    def add(self, out: Tensor, index: int, grad: Tensor, weight: float = 1.0) -> None:
        """out += weight · S(grad), where grad is the gradient of the parameter at ``index`` of the space."""
        flat = grad.detach().reshape(-1)
        gen = torch.Generator(device=flat.device)
        for c, lo in enumerate(range(0, flat.numel(), self.chunk)):
            part = flat[lo : lo + self.chunk].to(torch.float32)
            gen.manual_seed((self.seed * 1_000_003 + index) * 65_537 + c)
            h = torch.randint(0, 2 * self.dim, (part.numel(),), generator=gen, device=flat.device)
            signed = torch.where((h & 1) == 1, -part, part)
            out.index_add_(0, h >> 1, signed if weight == 1.0 else signed * weight)


def stream_grads(loss: Tensor, params: Sequence[nn.Parameter], consume: Callable[[int, Tensor], None]) -> None:
    """Backward of ``loss`` into ``params`` only; each parameter's gradient is handed to ``consume(index, grad)`` as
    soon as it is accumulated and then freed (peak: one parameter's gradient). ``.grad`` fields are left as found."""
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None

    def hook(i: int) -> Callable[[Tensor], None]:
        def fn(p: Tensor) -> None:
            consume(i, p.grad)
            p.grad = None
        return fn

    handles = [p.register_post_accumulate_grad_hook(hook(i)) for i, p in enumerate(params)]
    try:
        torch.autograd.backward(loss, inputs=list(params))
    finally:
        for h in handles:
            h.remove()
        for p, s in zip(params, saved, strict=True):
            p.grad = s


def sketched_gradient(loss: Tensor, params: Sequence[nn.Parameter], sketch: CountSketch,
                      weight: float = 1.0) -> tuple[Tensor, float]:
    """(weight · S(∇loss), ‖∇loss‖²) without ever holding the whole gradient."""
    out = sketch.zeros(params[0].device)
    sq = [0.0]

    def consume(i: int, g: Tensor) -> None:
        sq[0] += float(torch.linalg.vector_norm(g, dtype=torch.float64)) ** 2
        sketch.add(out, i, g, weight)

    stream_grads(loss, params, consume)
    return out, sq[0]


def gradient_monitor(model: nn.Module, space: ParamSpace, batches: list, device: torch.device,
                     mode: str = "auto") -> GradientMonitor:
    """The run's ``GradientMonitor`` with d_task = the k-shot gradient over ``space`` (a ``ParamSpace``): exact
    (``forward.set_gradient``, as before) or, when ``use_sketch``, its sketch, streamed batch by batch."""
    from gradft.forward import set_gradient, task_loss, to_device
    from gradft.metrics import GradientMonitor

    if not use_sketch(mode, space.numel):
        return GradientMonitor(set_gradient(model, space, batches, device))
    sketch = CountSketch()
    was_training = model.training
    model.eval()
    total = sum(int(b["labels"].shape[0]) for b in batches)
    d = sketch.zeros(space.params[0].device)
    with space.requiring_grad():
        for b in batches:
            b = to_device(b, device)
            d += sketched_gradient(task_loss(model, b), space.params, sketch, int(b["labels"].shape[0]) / total)[0]
    model.train(was_training)
    return GradientMonitor(d, sketch=sketch)

"""Task metrics (accuracy and the official SuperGLUE ones) and the two gradient metrics, defined in docs/metrics.md.

The gradient metrics are measured the same way for every method: ``GradientMonitor`` takes g_t = ∇ L_task(batch_t)
in one fixed ``ParamSpace`` (by default every pretrained backbone weight, trained or not), in eval mode (no dropout),
at the parameters before step t's update, every ``metrics.every`` steps.

Sketched gradient metrics (below): Gradient metrics whose memory does not grow with the backbone: a streamed
CountSketch of g (``metrics.sketch``).

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

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from gradft.forward import set_gradient, task_loss, to_device
from gradft.gradients import ParamSpace, cosine, norm


def accuracy(preds: Sequence[int], labels: Sequence[int]) -> float:
    return sum(int(p == y) for p, y in zip(preds, labels, strict=True)) / max(len(labels), 1)


def f1_macro(preds: Sequence[int], labels: Sequence[int], n_classes: int) -> float:
    """Unweighted mean of per-class F1 (CB's official metric); a class never predicted nor present scores 0."""
    scores = []
    for c in range(n_classes):
        tp = sum(1 for p, y in zip(preds, labels, strict=True) if p == c and y == c)
        fp = sum(1 for p, y in zip(preds, labels, strict=True) if p == c and y != c)
        fn = sum(1 for p, y in zip(preds, labels, strict=True) if p != c and y == c)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / n_classes


def stability(norms: Sequence[float]) -> float:
    """Gradient stability 1 / (1 + σ/μ) of the measured ‖g_t‖ (population std; 1 = constant norm)."""
    mean = sum(norms) / len(norms)
    std = math.sqrt(sum((x - mean) ** 2 for x in norms) / len(norms))
    return 1.0 / (1.0 + std / mean) if mean > 0 else float("nan")


def f1a(preds: Sequence[int], labels: Sequence[int]) -> float:
    """MultiRC F1a: binary F1 of the positive class over all answer options."""
    tp = sum(1 for p, y in zip(preds, labels, strict=True) if p == 1 and y == 1)
    fp = sum(1 for p, y in zip(preds, labels, strict=True) if p == 1 and y == 0)
    fn = sum(1 for p, y in zip(preds, labels, strict=True) if p == 0 and y == 1)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def exact_match(preds: Sequence[int], labels: Sequence[int], groups: Sequence[str]) -> float:
    """MultiRC EM: the fraction of questions whose every answer option is classified correctly."""
    ok: dict[str, bool] = defaultdict(lambda: True)
    for p, y, g in zip(preds, labels, groups, strict=True):
        ok[g] = ok[g] and p == y
    return sum(ok.values()) / max(len(ok), 1)


def task_metrics(
    names: Sequence[str], preds: Sequence[int], labels: Sequence[int], n_classes: int, groups: Sequence[str | None]
) -> dict[str, float]:
    """``accuracy`` always, plus each official metric the task config lists."""
    out = {"accuracy": accuracy(preds, labels)}
    for name in names:
        if name == "f1_macro":
            out[name] = f1_macro(preds, labels, n_classes)
        elif name == "f1a":
            out[name] = f1a(preds, labels)
        elif name == "exact_match":
            out[name] = exact_match(preds, labels, [g or "" for g in groups])
        elif name != "accuracy":
            raise ValueError(f"task.metrics: unknown metric '{name}' (known: accuracy, f1_macro, f1a, exact_match)")
    return out


def majority_baseline(train_labels: Sequence[int], eval_labels: Sequence[int]) -> float:
    """Accuracy of always predicting the most frequent of ``train_labels`` (ties: the lowest class index)."""
    if not train_labels:
        return float("nan")
    counts = Counter(train_labels)
    top = min(counts, key=lambda c: (-counts[c], c))
    return accuracy([top] * len(eval_labels), eval_labels)


BASELINE_KEYS = ("baseline_train_majority", "baseline_chance", "baseline_eval_majority")


def baselines(pool_labels: Sequence[int], eval_labels: Sequence[int], n_classes: int) -> dict[str, float]:
    """The floors a method must beat, each named for what it is (docs/metrics.md):

    baseline_train_majority           accuracy of the constant prediction a user can know without eval labels: the
                                      train pool's most frequent class (ties: the lowest class index)
    baseline_train_majority_f1_macro  macro-F1 of that constant prediction (1/C of one class's F1: the floor for F1)
    baseline_chance                   1 / C (C classes, or choices for multiple choice): a uniform random guess
    baseline_eval_majority            the eval split's own majority rate: the best constant, which needs eval labels
    """
    if not pool_labels or not eval_labels:
        nan = float("nan")
        return dict.fromkeys((*BASELINE_KEYS, "baseline_train_majority_f1_macro"), nan)
    counts = Counter(pool_labels)
    top = min(counts, key=lambda c: (-counts[c], c))
    const = [top] * len(eval_labels)
    return {
        "baseline_train_majority": accuracy(const, eval_labels),
        "baseline_train_majority_f1_macro": f1_macro(const, eval_labels, n_classes),
        "baseline_chance": 1.0 / n_classes,
        "baseline_eval_majority": max(Counter(eval_labels).values()) / len(eval_labels),
    }


class GradientMonitor:
    """Accumulates ‖g_t‖, cos(g_t, d_task) and cos(g_t, g_{t−1}); ``summary`` gives the two gradient metrics.

    gradient_stability    = 1 / (1 + std_t ‖g_t‖ / mean_t ‖g_t‖)        (population std; 1 = constant norm)
    directional_alignment = mean_t cos(g_t, d_task)                      (d_task: full k-shot gradient at step 0)
    """

    def __init__(self, d_task: Tensor, sketch=None):
        self.d_task = d_task  # flat over the metric space, or its sketch (``gradft.metrics``)
        self.sketch = sketch  # None: exact flat vectors (every space up to EXACT_UP_TO by default)
        self.prev: Tensor | None = None
        self.norms: list[float] = []
        self.cos_task: list[float] = []
        self.cos_prev: list[float] = []

    def observe(self, g: Tensor, gnorm: float | None = None) -> dict[str, float]:
        """Record one step's gradient; returns the per-step values for logging (``grad/*`` keys). Sketched: ``g`` is
        the sketch and ``gnorm`` the exact ‖g_t‖."""
        if not bool(torch.isfinite(g).all()) or (gnorm is not None and not math.isfinite(gnorm)):
            return {}  # a non-finite gradient is the trainer's business (it skips the step); never a metric
        n, c = norm(g) if gnorm is None else gnorm, cosine(g, self.d_task)
        self.norms.append(n)
        self.cos_task.append(c)
        out = {"grad/norm": n, "grad/cos_task": c}
        if self.prev is not None:
            self.cos_prev.append(cosine(g, self.prev))
            out["grad/cos_prev"] = self.cos_prev[-1]
        self.prev = g
        return out

    @staticmethod
    def empty_summary() -> dict[str, float]:
        """No gradient measured (zero-shot, or no step): every metric undefined (null in results.json)."""
        nan = float("nan")
        return {"gradient_stability": nan, "directional_alignment": nan, "grad_norm_mean": nan,
                "grad_cos_consecutive": nan, "grad_steps_measured": 0}

    def summary(self) -> dict[str, float]:
        if not self.norms:
            return self.empty_summary()
        mean = sum(self.norms) / len(self.norms)
        std = math.sqrt(sum((x - mean) ** 2 for x in self.norms) / len(self.norms))
        return {
            "gradient_stability": stability(self.norms),
            "directional_alignment": sum(self.cos_task) / len(self.cos_task),
            "grad_norm_mean": mean,
            "grad_norm_std": std,
            "grad_cos_consecutive": sum(self.cos_prev) / len(self.cos_prev) if self.cos_prev else float("nan"),
            "grad_steps_measured": len(self.norms),
            **({"grad_sketch_dim": self.sketch.dim} if self.sketch is not None else {}),
        }


# --- sketched gradient metrics ---------------------------------------------------------------------------

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

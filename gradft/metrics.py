"""Task metrics (accuracy and the official SuperGLUE ones) and the two gradient metrics, defined in docs/metrics.md.

The gradient metrics are measured the same way for every method: ``GradientMonitor`` takes g_t = ∇ L_task(batch_t)
in one fixed ``ParamSpace`` (by default every pretrained backbone weight, trained or not), in eval mode (no dropout),
at the parameters before step t's update, every ``metrics.every`` steps.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor

from gradft.gradients import cosine, norm


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
        self.d_task = d_task  # flat over the metric space, or its sketch (``gradft.grad_sketch``)
        self.sketch = sketch  # None: exact flat vectors (every space up to grad_sketch.EXACT_UP_TO by default)
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

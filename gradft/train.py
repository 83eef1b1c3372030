"""The step loop: plain steps (one forward + one backward) or guided steps (``StructuredGuidance``: two of each),
AdamW, gradient clipping, skipping of non-finite steps, and the gradient metrics every ``metrics.every`` steps.

Step t, in order: (1) on a metric step, measure g_t in the metric space at the current θ, in eval mode (an extra
forward+backward that does not touch the training RNG or gradients); (2) compute the training gradient, plain or
guided; (3) if the loss or the gradient is not finite, skip the update and count it; (4) clip and step.

``trainer.grad_accum=a`` splits each batch into a micro-batches (as even as possible), one backward each, weighted by
their share of the examples: g is the whole batch's mean, and a guided step's H·v is the finite difference over the
same micro-batches (``StructuredGuidance.gradient_over``). ``trainer.gradient_checkpointing`` recomputes activations
in the backward (``enable_checkpointing``). At their defaults (1, false) the step is computed as before, bit for bit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from gradft import stopping
from gradft.config.nodes import TrainerConfig
from gradft.data import iterate_batches
from gradft.forward import n_examples, slice_examples, task_loss, to_device
from gradft.gradients import ParamSpace
from gradft.guidance import StructuredGuidance
from gradft.metrics import GradientMonitor, sketched_gradient

log = logging.getLogger(__name__)


class Phases:
    """Wall seconds spent in named phases (accumulated over re-entries): a run's results.json ``profile``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._open: dict[str, float] = {}

    def start(self, name: str) -> None:
        self._open[name] = time.perf_counter()

    def stop(self, name: str) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - self._open.pop(name)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.start(name)
        try:
            yield
        finally:
            self.stop(name)


class NonFiniteError(RuntimeError):
    """Too many steps had a non-finite loss or gradient: the run stops rather than report garbage."""


@dataclass
class TrainState:
    step: int = 0
    skipped_nonfinite: int = 0
    history: dict[str, list[float]] = field(default_factory=lambda: {"train/loss": []})
    trace: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # every logged value: key -> (step, v)


def epoch_batches(examples: list, batch_size: int, collate: Callable, seed: int) -> Iterator[dict[str, Tensor]]:
    """Endless stream of shuffled batches: epoch e is shuffled by ``Random(seed * 100003 + e)``."""
    epoch = 0
    while True:
        yield from iterate_batches(examples, batch_size, collate, shuffle=True, seed=seed * 100003 + epoch)
        epoch += 1


def plain_gradient(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """One forward + one backward into ``.grad``; returns the (detached) loss."""
    loss = task_loss(model, batch)
    loss.backward()
    return loss.detach()


def micro_batches(batch: dict[str, Tensor], parts: int) -> tuple[list[dict[str, Tensor]], list[float]]:
    """``batch`` cut into ``parts`` micro-batches of consecutive examples (sizes differ by at most one; fewer parts
    when the batch is smaller) and each one's share of the examples: Σ share_i · mean-loss_i = the batch's mean."""
    b = n_examples(batch)
    parts = max(1, min(parts, b))
    bounds = [b * i // parts for i in range(parts + 1)]
    return ([slice_examples(batch, lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False)],
            [(hi - lo) / b for lo, hi in zip(bounds, bounds[1:], strict=False)])


def accumulated_gradient(model: nn.Module, batch: dict[str, Tensor], parts: int) -> Tensor:
    """``plain_gradient`` over ``parts`` micro-batches, accumulated in ``.grad``; returns the batch's mean loss."""
    batches, shares = micro_batches(batch, parts)
    total = None
    for mb, w in zip(batches, shares, strict=True):
        loss = task_loss(model, mb) * w
        loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
    return total


def enable_checkpointing(model: nn.Module) -> None:
    """``trainer.gradient_checkpointing``: activations recomputed in the backward (transformers' non-reentrant
    checkpointing: it restores the RNG, so dropout masks and the finite difference's replay are unchanged)."""
    if not hasattr(model, "gradient_checkpointing_enable"):
        raise ValueError(f"trainer.gradient_checkpointing: {type(model).__name__} has no gradient_checkpointing_enable")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


class Trainer:
    """Runs optimisation steps of ``model`` on a stream of batches. ``config``: the run's ``trainer:`` node
    (``max_grad_norm``, ``max_skipped``, ``grad_accum`` are read here); the rest is what the run built: the space of
    trainable parameters, the optimiser and its schedule, the device, optional guidance, the gradient metrics
    (``monitor`` on ``metric_space``, one step in ``metrics_every``), where logged values go (``log_fn``), the run's
    step count (``total``: fit may be called in chunks, progress says step t/total) and its ``phases``."""

    def __init__(self, model: nn.Module, space: ParamSpace, optimizer: torch.optim.Optimizer, scheduler,
                 device: torch.device, config: TrainerConfig, *, guidance: StructuredGuidance | None = None,
                 monitor: GradientMonitor | None = None, metric_space: ParamSpace | None = None, metrics_every: int = 1,
                 log_fn: Callable[[dict[str, float], int], None] | None = None, total: int | None = None,
                 phases: Phases | None = None):
        self.model, self.space, self.opt, self.sched, self.device = model, space, optimizer, scheduler, device
        self.config = config
        self.guidance, self.monitor = guidance, monitor
        self.metric_space, self.metrics_every = metric_space, metrics_every
        self.log_fn = log_fn or (lambda values, step: None)
        self.state = TrainState()
        self.total = total
        self.phases = phases or Phases()  # "metric_passes": the time of the gradient-metric passes
        self._t0: float | None = None

    def measure(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """g_t in the metric space at the current θ, eval mode, for the gradient metrics."""
        assert self.monitor is not None and self.metric_space is not None
        with self.phases("metric_passes"):
            self.model.eval()
            with self.metric_space.requiring_grad():
                if self.monitor.sketch is None:  # exact: one flat vector
                    g, gnorm = self.metric_space.grad(task_loss(self.model, batch)), None
                else:  # streamed: never the whole gradient at once (gradft.metrics)
                    g, sq = sketched_gradient(task_loss(self.model, batch), self.metric_space.params,
                                              self.monitor.sketch)
                    gnorm = math.sqrt(sq)
            self.model.train()
            return self.monitor.observe(g) if gnorm is None else self.monitor.observe(g, gnorm)

    def step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """One optimisation step on ``batch`` (already on the device)."""
        t, logs = self.state.step, {}
        if self.monitor is not None and t % self.metrics_every == 0:
            logs.update(self.measure(batch))
        task_g: Tensor | None = None  # the task gradient g = ∇L_base of a guided step: what guidance observes
        if self.guidance is not None and self.guidance.active(t):
            self.guidance.refresh_source(t)
            guided = self.guidance.gradient(batch) if self.config.grad_accum == 1 else \
                self.guidance.gradient_over(*micro_batches(batch, self.config.grad_accum))
            loss, task_g, task_norm = guided.loss, guided.task, guided.logs["guide/grad_norm"]
            logs.update(guided.logs)
            finite = bool(torch.isfinite(guided.total).all()) and bool(torch.isfinite(loss))
            if finite:
                self.space.write_grads(guided.total)
        else:
            loss = plain_gradient(self.model, batch) if self.config.grad_accum == 1 else \
                accumulated_gradient(self.model, batch, self.config.grad_accum)
            finite = bool(torch.isfinite(loss))
        gnorm = float("nan")
        if finite:  # the clipping norm doubles as the finiteness check of the gradient
            gnorm = float(nn.utils.clip_grad_norm_(self.space.params, self.config.max_grad_norm or float("inf")))
            finite = math.isfinite(gnorm)
        if finite:
            if self.guidance is not None and task_g is None:  # a plain step: .grad holds g (clipping keeps its
                task_norm = gnorm                               # direction; gnorm is its norm before clipping)
                task_g = self.space.read_grads() if self.guidance.cfg.d_prior == "ema" else None
            self.opt.step()
            # bf16: autocast keeps its low-precision copy of each trainable weight for the whole autocast region (the
            # run): without this the next forward would still see the weights of step 0, and nothing would train
            torch.clear_autocast_cache()
            if self.guidance is not None:  # the task gradient, never the guided one (that fed τ its own output)
                self.guidance.observe(task_g, task_norm)
        else:
            self.state.skipped_nonfinite += 1
            log.warning("step %d: non-finite loss or gradient, update skipped (%d so far)", t,
                        self.state.skipped_nonfinite)
            if self.state.skipped_nonfinite > self.config.max_skipped:
                raise NonFiniteError(
                    f"{self.state.skipped_nonfinite} steps had a non-finite loss or gradient "
                    f"(trainer.max_skipped={self.config.max_skipped}): stopping instead of reporting garbage"
                )
        self.opt.zero_grad(set_to_none=True)
        if self.sched is not None:
            self.sched.step()
        logs.update({"train/loss": float(loss), "train/grad_norm": gnorm, "train/lr": self.opt.param_groups[0]["lr"],
                     "train/skipped_nonfinite": self.state.skipped_nonfinite})
        self.state.history["train/loss"].append(float(loss))
        for k, v in logs.items():
            self.state.trace.setdefault(k, []).append((t, v))
        self.state.step += 1
        return logs

    def fit(self, batches: Iterator[dict[str, Tensor]], steps: int, desc: str = "train") -> TrainState:
        """``steps`` more steps. Off a terminal, a log line every 10 % of the run (global step / total, ETA). An
        interrupt (SIGINT, SIGTERM) leaves with ``.step`` set on the exception: the step the run stopped at."""
        self.model.train()
        total = self.total or self.state.step + steps
        every = max(1, total // 10)
        self._t0 = self._t0 or time.perf_counter()
        bar = tqdm(range(steps), desc=desc, disable=None)  # silent when not on a terminal: then a log line
        try:
            for _ in bar:
                stopping.check()  # a SIGTERM whose exception a finalizer swallowed still stops the run here
                logs = self.step(to_device(next(batches), self.device))
                self.log_fn(logs, self.state.step)
                bar.set_postfix(loss=f"{logs['train/loss']:.4f}")
                t = self.state.step
                if bar.disable and (t % every == 0 or t == total):
                    per_step = (time.perf_counter() - self._t0) / max(t, 1)  # since step 0
                    log.info("%s: step %d/%d, loss %.4f, %.1f s/step, ETA %.0f s", desc, t, total,
                             logs["train/loss"], per_step, per_step * (total - t))
        except KeyboardInterrupt as e:
            e.step = self.state.step  # type: ignore[attr-defined]
            raise
        return self.state

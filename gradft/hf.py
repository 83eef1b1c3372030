"""Structured guidance inside a Hugging Face ``transformers.Trainer``: ``GuidedTrainer`` (docs/api.md).

Owns the Trainer subclass. The loss is the Trainer's own (``compute_loss``: whatever the model returns as
``outputs.loss``, a ``compute_loss_func``, label smoothing), so sequence classification, causal-LM SFT and peft
models all work unchanged. Mixed precision (bf16) and gradient accumulation go through the Trainer's machinery:

- plain steps (``every``, ``warmup``) are the Trainer's own ``training_step`` (accelerate's backward, DDP's
  all-reduce, its accumulation scaling); the guidance then observes the accumulated task gradient in ``.grad``;
- a guided optimisation step collects the accumulation window's micro-batches (the Trainer marks the last one with
  ``accelerator.sync_gradients``) and computes the guided gradient over all of them at once, under the Trainer's
  autocast: g is the window's gradient exactly as the Trainer would accumulate it (token-normalised over the window
  when the model takes ``num_items_in_batch``, else the mean of the micro-batches), H·v is the finite difference over
  the same micro-batches, and under DDP every gradient is averaged over the ranks. The result is written to ``.grad``;
  the Trainer then clips and steps as usual.

fp16 (a GradScaler) is refused: the guided gradient would have to be rescaled by the scaler's factor; use bf16.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers
from torch import Tensor, nn

from gradft.api import guidance_config_from
from gradft.config.guidance import GuidanceConfig
from gradft.gradients import ParamSpace, all_reduce_mean, norm
from gradft.guidance import StructuredGuidance


class GuidedTrainer(transformers.Trainer):
    """``transformers.Trainer`` whose optimisation steps follow structured guidance.

    ``guidance``: a ``GuidanceConfig`` or a dict of its fields (``mode``, ``lambda1``, …). ``guidance_params``: the
    parameters to guide, default every parameter that requires grad (with peft: the adapter and any
    ``modules_to_save`` head). Everything else is ``transformers.Trainer``'s."""

    def __init__(self, *args: Any, guidance: GuidanceConfig | dict | None = None,
                 guidance_params: list | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.args.fp16:
            raise ValueError("GuidedTrainer: fp16 (GradScaler) is not supported; use bf16=True or fp32")
        self.guidance_config = guidance_config_from(guidance)
        self.guidance_params = guidance_params
        self.guidance: StructuredGuidance | None = None  # built at the first step, after accelerate has prepared
        self.guidance_logs: dict[str, float] = {}  # the last guided step's guide/* values
        self._window: list[dict[str, Any]] = []

    def _guidance(self, model: nn.Module) -> StructuredGuidance:
        if self.guidance is None:
            module = self.accelerator.unwrap_model(model)
            named = self.guidance_params or [(n, p) for n, p in module.named_parameters() if p.requires_grad]
            named = [p if isinstance(p, tuple) else (f"param{i}", p) for i, p in enumerate(named)]
            reduce = all_reduce_mean() if self.accelerator.num_processes > 1 else None
            self.guidance = StructuredGuidance(self.guidance_config, module, ParamSpace(named), self._window_loss,
                                               reduce=reduce)
        return self.guidance

    def _window_loss(self, module: nn.Module, item: tuple[dict[str, Any], Any]) -> Tensor:
        inputs, n_items = item
        return self.compute_loss(module, dict(inputs), num_items_in_batch=n_items)  # a copy: it may pop labels

    def _scaled_for_window(self, num_items_in_batch: Any) -> bool:
        """Does ``compute_loss`` already normalise over the whole window (as ``Trainer.training_step`` decides)?"""
        if self.loss_is_scaled_for_ga is not None:
            return bool(self.loss_is_scaled_for_ga)
        return (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None

    def training_step(self, model: nn.Module, inputs: dict[str, Any],
                      num_items_in_batch: Tensor | int | None = None) -> Tensor:
        guide = self._guidance(model)
        step, last = self.state.global_step, self.accelerator.sync_gradients
        if not guide.active(step):
            loss = super().training_step(model, inputs, num_items_in_batch)
            if last:  # the window's task gradient, accumulated (and all-reduced) by the Trainer, before clipping
                g = guide.space.read_grads()
                if bool(torch.isfinite(g).all()):
                    guide.observe(g, norm(g))
            return loss
        model.train()
        self._window.append(self._prepare_inputs(inputs))
        if not last:
            return torch.zeros((), device=self.args.device)
        window, self._window = [(b, num_items_in_batch) for b in self._window], []
        n = len(window)
        weights = [1.0] * n if self._scaled_for_window(num_items_in_batch) else [1.0 / n] * n
        guide.refresh_source(step)
        with self.compute_loss_context_manager(), self.accelerator.autocast():
            out = guide.gradient_over(window, weights)
        guide.space.write_grads(out.total)
        if bool(torch.isfinite(out.task).all()):
            guide.observe(out.task, out.logs["guide/grad_norm"])
        self.guidance_logs = dict(out.logs)
        return out.loss.to(self.args.device)

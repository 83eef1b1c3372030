"""How a collated batch becomes logits and a task loss, for classification and multiple-choice tasks alike.

Multiple choice (COPA): the collator flattens B examples × C choices into B·C rows and the model (``num_labels=1``)
scores each row; the scores are reshaped to (B, C) and the loss is cross-entropy over the choices.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def logits_of(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "n_choices")}
    logits = model(**inputs).logits
    if "n_choices" in batch:
        logits = logits.view(-1, int(batch["n_choices"]))
    return logits.float()


def task_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Mean cross-entropy of the batch: the paper's L_base."""
    return nn.functional.cross_entropy(logits_of(model, batch), batch["labels"])


def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def set_gradient(model: nn.Module, space, batches: list[dict[str, Tensor]], device: torch.device) -> Tensor:
    """∇ of the mean loss over a whole example set (e.g. the k-shot training set), in eval mode (no dropout),
    as a flat vector of ``space`` (a ``gradft.gradients.ParamSpace``). Batch losses are weighted by size."""
    was_training = model.training
    model.eval()
    total = sum(int(b["labels"].shape[0]) for b in batches)
    g = None
    with space.requiring_grad():
        for b in batches:
            b = to_device(b, device)
            gi = space.grad(task_loss(model, b) * (int(b["labels"].shape[0]) / total))
            g = gi if g is None else g + gi
    model.train(was_training)
    return g

"""One run, start to finish: ``run(cfg) -> results``. Everything else (the CLI, sweeps, grids, tests) calls this.

    validate config -> load task + sample k shots -> load backbone -> apply method (+ guidance)
    -> d_task, train (plain or guided steps, gradient metrics) -> evaluate -> results.json + W&B
    (+ the trained model and predictions.jsonl: gradft.trained.save)

``head=classifier`` trains a new classification head; ``head=lm`` phrases each example as the task's prompt and
scores label words or candidates with the pretrained LM head (``gradft.data.prompting``). ``shots=0`` (head=lm only)
evaluates the pretrained model as it is: no method is applied, no step is taken, the gradient metrics are null.
``method=icl`` (head=lm) is the same with the k shots as demonstrations in every prompt (``gradft.methods.icl``).

A run is a pure function of its composed config: ``seed`` fixes initialisation and batch order, ``data_seed``
fixes which k examples are drawn. All config errors are raised before any model is loaded.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from transformers import get_linear_schedule_with_warmup

from gradft import data as gdata
from gradft.config.guidance import GuidanceConfig
from gradft.config.nodes import MetricsConfig, TrainerConfig, train_steps
from gradft.config.schema import validate
from gradft.data.checks import draw_for_run, source_label_index
from gradft.data.taskconf import compose_task
from gradft.evaluate import eval_examples, evaluate, make_collator
from gradft.forward import set_gradient
from gradft.gradients import ParamSpace
from gradft.guidance import StructuredGuidance
from gradft.methods import apply_method, trainable_parameters
from gradft.methods.icl import attach as attach_demonstrations
from gradft.methods.icl import is_icl
from gradft.metrics import GradientMonitor, baselines, gradient_monitor
from gradft.models import backbone_parameters, load_backbone
from gradft.stopping import EarlyStopping, final_train_loss, interrupted, sigterm_interrupts
from gradft.tracking import Tracker, config_key, hardware, write_results
from gradft.train import Phases, Trainer, enable_checkpointing, epoch_batches
from gradft.trained.save import save_run

log = logging.getLogger(__name__)


def summary_keys(metrics: dict[str, float]) -> dict[str, float]:
    """results.json names -> W&B ``split/name`` keys (``val/accuracy``, ``grad/stability``, ``grad/alignment``)."""
    rename = {"gradient_stability": "grad/stability", "directional_alignment": "grad/alignment"}
    return {rename.get(k, f"grad/{k[5:]}" if k.startswith("grad_") else f"val/{k}"): v for k, v in metrics.items()}


def _device(name: str) -> torch.device:
    """``trainer.device`` as a torch device; one a machine does not have is a ValueError naming the key."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={name}: this machine has no CUDA device (torch.cuda.is_available() is "
                         "False); use trainer.device=auto or cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"trainer.device={name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"trainer.device={name}: MPS is not available on this machine; use trainer.device=auto")
    return device


def _source_gradient_fn(cfg: DictConfig, task: gdata.TaskData, model, space, collate, device, tok) -> Callable:
    """The k-shot gradient of the guidance's source task, as a closure. head=classifier: the source's labels are
    mapped onto the target's head by name or ``guidance.source_label_map`` (``gradft.data.checks``), never by
    position. head=lm: the source keeps its own prompt and label words (any two tasks fit)."""
    gcfg = cfg.guidance
    scfg = compose_task(gcfg.source_task, cfg)  # on the run's config search path: a user's own task can guide
    source = gdata.load_task(scfg, cfg.data)
    examples = gdata.sample_shots(source.train_pool, min(cfg.shots, len(source.train_pool)), cfg.data_seed)
    if cfg.get("head", "classifier") == "lm":
        collate = make_collator(cfg, scfg, source, tok, model)
    else:  # by name or by guidance.source_label_map, never by position
        index = source_label_index(source, task, gcfg.source_task, gcfg.source_label_map)
        examples = [replace(e, label=index[e.label]) for e in examples]
    batches = list(gdata.iterate_batches(examples, cfg.trainer.batch_size, collate, shuffle=False))
    return lambda: set_gradient(model, space, batches, device)


@dataclass
class Built:
    """What a run evaluates (and trains, unless zero-shot or icl): the model after its method, and what feeds it."""

    task: gdata.TaskData
    shots: list[gdata.Example]
    eval_set: list[gdata.Example]
    model: Any
    tok: Any
    backbone: list  # the pretrained weights, captured before a method wraps the model (metrics.space=backbone)
    space: ParamSpace  # the trainable parameters
    collate: Any
    scorer: Any  # the model evaluation runs (icl: shares the demonstrations' KV cache)
    demos: Any  # icl: the demonstrations attached to every prompt row; else None
    eval_bs: int
    trains: bool


@dataclass
class Trained:
    """What training left (nothing for zero-shot and icl): the trainer, its monitor and guidance, the step cap and
    how far it went (``trainer.stop``: gradft.stopping), and the wall seconds it took."""

    trainer: Trainer | None = None
    monitor: GradientMonitor | None = None
    guidance: StructuredGuidance | None = None
    steps: int = 0
    length: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _make_trainer(cfg: DictConfig, tc: TrainerConfig, b: Built, metric_space: ParamSpace, shot_batches: list,
                  device, tracker: Tracker, phases: Phases, steps: int) -> Trainer:
    """d_task (the gradient metrics' reference), guidance (its d_prior=init and source gradient), AdamW and the
    schedule, and the ``Trainer`` that steps them."""
    model, space = b.model, b.space
    monitor = None  # metrics.every=0 (sweeps: only the selection accuracy counts) skips d_task and every metric pass
    metrics = MetricsConfig.from_cfg(cfg.metrics)
    if metrics.every:
        with phases("d_task"):
            monitor = gradient_monitor(model, metric_space, shot_batches, device, metrics.sketch)
    guidance = None
    if cfg.guidance.name != "none":
        guidance = StructuredGuidance(GuidanceConfig.from_cfg(cfg.guidance), model, space)
        if guidance.cfg.needs_source:
            guidance.source_fn = _source_gradient_fn(cfg, b.task, model, space, b.collate, device, b.tok)
        with phases("d_task"):  # d_prior=init and the source gradient
            guidance.start(lambda: set_gradient(model, space, shot_batches, device))
    opt = torch.optim.AdamW(space.params, lr=cfg.method.lr, weight_decay=tc.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, int(tc.warmup_ratio * steps), max(steps, 1)) \
        if tc.schedule == "linear" else None
    if tc.gradient_checkpointing:
        enable_checkpointing(model)
    return Trainer(model, space, opt, sched, device, tc, guidance=guidance, monitor=monitor,
                   metric_space=metric_space, metrics_every=metrics.every or 1, log_fn=tracker.log, total=steps,
                   phases=phases)


def _train(cfg: DictConfig, tc: TrainerConfig, b: Built, metric_space: ParamSpace, device, tracker: Tracker,
           report, phases: Phases) -> Trained:
    """The training loop, in chunks so that the selection split can be scored (and the run pruned or stopped
    early) between them; ``steps`` is the cap (``trainer.stop``: gradft.stopping)."""
    t0, shots, task = time.perf_counter(), b.shots, b.task
    bs = min(tc.batch_size, len(shots))
    shot_batches = list(gdata.iterate_batches(shots, bs, b.collate, shuffle=False))  # tokenized once, reused
    steps = train_steps(cfg, len(shots))
    trainer = _make_trainer(cfg, tc, b, metric_space, shot_batches, device, tracker, phases, steps)
    batches = epoch_batches(shots, bs, b.collate, cfg.seed)
    stopper = EarlyStopping(b.space.params, tc.patience) if tc.stop == "early" else None
    every = cfg.eval.select_every if report is not None or stopper else 0
    done, curve = 0, []
    while done < steps:
        chunk = min(every or steps, steps - done)
        with phases("steps"):
            trainer.fit(batches, chunk, desc=f"{cfg.method.name} {task.name} k={cfg.shots}")
        done += chunk
        if every and (done < steps or stopper):
            with phases("select_eval"):
                acc = evaluate(b.model, task.select, b.collate, cfg.eval.batch_size, device, [], len(task.labels),
                               "select")["accuracy"]
            tracker.log({"select/accuracy": acc}, trainer.state.step)
            curve.append([done, acc])
            if report is not None and done < steps:
                report(done, acc)
            if stopper and stopper.update(done, acc):
                log.info("early stop at step %d/%d: select accuracy %.4f at step %s, not beaten in %d scores",
                         done, steps, stopper.best_acc, stopper.best_step, stopper.patience)
                break
    if stopper:
        stopper.restore()  # evaluate the best checkpoint's trainable weights
    length = {"steps_run": done, "best_step": stopper.best_step if stopper else done,
              "stopped_early": bool(stopper) and done < steps, "per_epoch": math.ceil(len(shots) / bs),
              "select_curve": curve}
    phases.seconds["steps"] -= phases.seconds.get("metric_passes", 0.0)  # steps: the optimisation steps alone
    return Trained(trainer, trainer.monitor, trainer.guidance, steps, length, time.perf_counter() - t0)


def _length_record(trainer: Trainer | None, ln: dict[str, Any]) -> dict[str, Any]:
    """results.json: how long the run trained, whose weights were evaluated, and the training loss there."""
    if trainer is None:  # zero-shot
        return {"steps_run": 0, "best_step": None, "stopped_early": False, "final_train_loss": None,
                "select_curve": []}
    loss = final_train_loss(trainer.state.history["train/loss"], ln["best_step"] or ln["steps_run"], ln["per_epoch"])
    return {"steps_run": ln["steps_run"], "best_step": ln["best_step"], "stopped_early": ln["stopped_early"],
            "final_train_loss": loss, "select_curve": ln["select_curve"]}


def run(cfg: DictConfig, out_dir: str | Path | None = None,
        report: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train and evaluate one configuration; returns (and writes) its results. ``report(step, select_accuracy)``
    is called every ``eval.select_every`` steps (sweeps use it for pruning; it may raise to stop the run).
    SIGINT or SIGTERM raise ``RunInterrupted`` saying at which step (``gradft.stopping``): no results.json."""
    validate(cfg)
    with sigterm_interrupts():
        try:
            return _run(cfg, out_dir, report)
        except KeyboardInterrupt as e:
            raise interrupted(e, getattr(e, "step", None), train_steps(cfg, cfg.shots) if cfg.shots else 0) from None


def _run(cfg: DictConfig, out_dir: str | Path | None, report: Callable[[int, float], None] | None) -> dict[str, Any]:
    """The run's steps, top to bottom: data, model, tracker, then (under bf16 autocast when asked) train, evaluate,
    write."""
    t0 = time.perf_counter()
    phases = Phases()  # wall seconds per phase of the run: results.json "profile" (make bench prints a cell's)
    out = Path(out_dir or cfg.paths.output_dir)
    tc = TrainerConfig.from_cfg(cfg.trainer)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = _device(tc.device)
    with phases("data"):
        task = gdata.load_task(cfg.task, cfg.data)
        shots = draw_for_run(cfg, task)  # the checks python -m gradft.data makes too
        eval_set = eval_examples(task.eval, cfg.eval.max_examples)
    with phases("model_load"):
        b = _build(cfg, task, shots, eval_set, device)
    with phases("tracker"):
        tracker = Tracker(cfg, out)
    failed = True
    try:
        # bf16: autocast over training and evaluation; weights, optimizer state and guidance's differences stay fp32
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.precision == "bf16"):
            metric_space = ParamSpace(b.backbone) if cfg.metrics.space == "backbone" else b.space
            tr = _train(cfg, tc, b, metric_space, device, tracker, report, phases) if b.trains else Trained()
            results, scores = _evaluate(cfg, b, tr, metric_space, device, phases)
            _write(cfg, b, results, scores, out, tracker, phases, t0)
        failed = False
        return results
    finally:
        tracker.finish(failed)


def _build(cfg: DictConfig, task: gdata.TaskData, shots: list, eval_set: list, device: torch.device) -> Built:
    """The backbone (seeded by ``seed``), the method applied unless nothing trains, the batch builder, and for icl
    the demonstrations in every prompt row."""
    head = cfg.get("head", "classifier")
    torch.manual_seed(cfg.seed)  # the new head, LoRA's A, adapters and prompts are initialised from here
    n_out = 1 if task.multiple_choice else len(task.labels)
    model, tok = load_backbone(cfg.model, n_out, cfg.paths.cache_dir, head)
    backbone = backbone_parameters(model)  # captured before a method wraps the model
    icl = is_icl(cfg.method) and bool(shots)  # in-context learning: the shots are demonstrations, nothing trains
    trains = bool(shots) and not icl
    if trains:  # zero-shot: the pretrained model as it is (prompt tuning's random virtual tokens would change it)
        model = apply_method(model, cfg.method)
    model = model.to(device)
    space = ParamSpace(trainable_parameters(model))
    if trains:
        log.info("head %s, method %s: %d trainable parameters; %d shots drawn with data_seed=%d (labels %s)", head,
                 cfg.method.name, space.numel, len(shots), cfg.data_seed,
                 sorted(Counter(e.label for e in shots).items()))
    elif not icl:
        log.info("head %s, zero-shot: the pretrained model as it is, no method, no training step", head)
    collate = make_collator(cfg, cfg.task, task, tok, model)
    demos, scorer = None, model
    if icl:  # the demonstrations go into every prompt row; a causal LM computes their KV cache once
        demos, scorer = attach_demonstrations(collate, shots, cfg.seed, model, tok, cfg.method.context)
    eval_bs = cfg.method.eval_batch_size if icl else cfg.eval.batch_size
    return Built(task, shots, eval_set, model, tok, backbone, space, collate, scorer, demos, eval_bs, trains)


def _evaluate(cfg: DictConfig, b: Built, tr: Trained, metric_space: ParamSpace, device: torch.device,
              phases: Phases) -> tuple[dict[str, Any], list]:
    """results.json: the reported split's metrics, the gradient metrics' summary, the class-rate floors, how the run
    trained, and the selection split's metrics when asked; and the per-example scores (predictions.jsonl)."""
    task, eval_set, shots = b.task, b.eval_set, b.shots
    metric_names, n_cls = list(cfg.task.get("metrics", [])), len(task.labels)
    metrics: dict[str, float] = {}
    scores: list = []  # per example and class, from the same pass: predictions.jsonl (gradft.trained.save)
    if "eval" in cfg.eval.splits:  # sweeps score only the selection split: never select on the reported one
        with phases("eval"):
            metrics = evaluate(b.scorer, eval_set, b.collate, b.eval_bs, device, metric_names, n_cls, scores=scores)
    metrics.update(tr.monitor.summary() if tr.monitor else GradientMonitor.empty_summary())
    # floors from the train pool (never the drawn, class-balanced shots), chance, and the eval split's own rate
    metrics.update(baselines([e.label for e in task.train_pool], [e.label for e in eval_set], n_cls))
    state = tr.trainer.state if tr.trainer else None
    results: dict[str, Any] = {
        "method": cfg.method.name if shots else "zero-shot",  # k = 0 applies no method
        "task": task.name, "shots": cfg.shots, "seed": cfg.seed,
        "data_seed": cfg.data_seed, "model": cfg.model.name, "head": cfg.get("head", "classifier"),
        "guidance": cfg.guidance.name, "config_key": config_key(cfg), "env": hardware(device), "metrics": metrics,
        "eval_examples": len(eval_set), "shot_ids": [e.idx for e in shots], "data": task.info,
        "trainable_params": b.space.numel if b.trains else 0, "metric_space_params": metric_space.numel,
        "steps": tr.steps, "skipped_nonfinite": state.skipped_nonfinite if state else 0,
        **_length_record(tr.trainer, tr.length),
        "train_time_s": tr.seconds, "wall_time_s": None, "history": state.history if state else {},
        "trace": {k: v for k, v in state.trace.items() if k.startswith(("guide/", "grad/"))} if state else {},
    }
    if b.demos is not None:  # demonstrations used per eval row (the selection split's are not counted)
        results["icl"] = b.demos.summary()
    if tr.guidance is not None:
        results["guidance_version"] = tr.guidance.cfg.version
        results["guidance_stats"] = _guidance_stats(tr.guidance, state)
    if "select" in cfg.eval.splits:
        with phases("select_eval"):
            results["select_metrics"] = evaluate(b.scorer, task.select, b.collate, b.eval_bs, device,
                                                 metric_names, n_cls, "select")
    return results, scores


def _guidance_stats(guidance: StructuredGuidance, state) -> dict[str, Any]:
    """Counts of every safeguard that acted, the unstable-guidance sentences (none: an empty list) and the means of
    R_dir, R_mag, R_grad, the cosines and ‖Hv‖/‖g‖ over the run."""
    warnings = guidance.health(state.history["train/loss"])
    for w in warnings:
        log.warning("guidance (%s reading): %s", guidance.cfg.mode, w)
    stats = {**guidance.counts, "mode": guidance.cfg.mode, "warnings": warnings}
    for key, values in state.trace.items():
        if key.startswith("guide/"):
            stats[key.removeprefix("guide/") + "_mean"] = sum(v for _, v in values) / len(values)
    return stats


def _write(cfg: DictConfig, b: Built, results: dict[str, Any], scores: list, out: Path, tracker: Tracker,
           phases: Phases, t0: float) -> None:
    """The trained model and predictions (``save.*``), the profile, results.json + config.yaml, W&B's summary, and
    the run's one log line."""
    with phases("save"):  # save.model / save.predictions: the trained model and per-example predictions
        results["saved"] = save_run(out, cfg, b.model, b.tok, b.task, b.eval_set, scores)
    results["wall_time_s"] = time.perf_counter() - t0
    results["profile"] = {**phases.seconds, "other": results["wall_time_s"] - sum(phases.seconds.values())}
    write_results(out, results, cfg)
    metrics = results["metrics"]
    tracker.summary(summary_keys(metrics))
    split = "accuracy" if "accuracy" in metrics else "select accuracy"
    log.info("%s %s k=%d seed=%d: %s %.4f, stability %.3f, alignment %.3f (%.1fs) -> %s",
             results["method"], b.task.name, cfg.shots, cfg.seed, split,
             metrics.get("accuracy", results.get("select_metrics", {}).get("accuracy", float("nan"))),
             metrics["gradient_stability"], metrics["directional_alignment"], results["wall_time_s"], out)

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
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from transformers import get_linear_schedule_with_warmup

from gradft import data as gdata
from gradft.config.guidance import guidance_config
from gradft.config.schema import CONF_DIR, train_steps, validate  # noqa: F401  (re-exported: callers import them here)
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


def _train(cfg: DictConfig, task: gdata.TaskData, shots: list[gdata.Example], model, space: ParamSpace,
           metric_space: ParamSpace, collate, device, tracker: Tracker, report, tok,
           phases: Phases) -> tuple[Trainer, Any, Any, int, dict[str, Any]]:
    """d_task, optional guidance, then the training loop: (trainer, monitor, guidance, steps, length), steps the
    cap and length how far it went (``trainer.stop``: gradft.stopping)."""
    bs = min(cfg.trainer.batch_size, len(shots))
    shot_batches = list(gdata.iterate_batches(shots, bs, collate, shuffle=False))  # tokenized once, reused
    monitor = None  # metrics.every=0 (sweeps: only the selection accuracy counts) skips d_task and every metric pass
    if cfg.metrics.every:
        with phases("d_task"):
            monitor = gradient_monitor(model, metric_space, shot_batches, device, cfg.metrics.get("sketch", "auto"))
    guidance = None
    if cfg.guidance.name != "none":
        guidance = StructuredGuidance(guidance_config(cfg.guidance), model, space)
        if guidance.cfg.needs_source:
            guidance.source_fn = _source_gradient_fn(cfg, task, model, space, collate, device, tok)
        with phases("d_task"):  # d_prior=init and the source gradient
            guidance.start(lambda: set_gradient(model, space, shot_batches, device))
    opt = torch.optim.AdamW(space.params, lr=cfg.method.lr, weight_decay=cfg.trainer.weight_decay)
    steps = train_steps(cfg, len(shots))
    sched = get_linear_schedule_with_warmup(opt, int(cfg.trainer.warmup_ratio * steps), max(steps, 1)) \
        if cfg.trainer.schedule == "linear" else None
    if cfg.trainer.get("gradient_checkpointing", False):
        enable_checkpointing(model)
    trainer = Trainer(model, space, opt, sched, device, cfg.trainer.max_grad_norm, cfg.trainer.max_skipped,
                      guidance, monitor, metric_space, cfg.metrics.every or 1, tracker.log, total=steps,
                      phases=phases, grad_accum=int(cfg.trainer.get("grad_accum", 1)))
    batches = epoch_batches(shots, bs, collate, cfg.seed)
    # trainer.stop=early: `steps` is the cap; the selection split is scored every select_every steps (gradft.stopping)
    stopper = EarlyStopping(space.params, cfg.trainer.patience) if cfg.trainer.get("stop") == "early" else None
    every = cfg.eval.select_every if report is not None or stopper else 0
    done, curve = 0, []
    while done < steps:  # in chunks so that the selection split can be scored (and the run pruned) between
        chunk = min(every or steps, steps - done)
        with phases("steps"):
            trainer.fit(batches, chunk, desc=f"{cfg.method.name} {task.name} k={cfg.shots}")
        done += chunk
        if every and (done < steps or stopper):
            with phases("select_eval"):
                acc = evaluate(model, task.select, collate, cfg.eval.batch_size, device, [], len(task.labels),
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
    return trainer, monitor, guidance, steps, length


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
    t0 = time.perf_counter()
    phases = Phases()  # wall seconds per phase of the run: results.json "profile" (make bench prints a cell's)
    out = Path(out_dir or cfg.paths.output_dir)
    if cfg.trainer.threads:
        torch.set_num_threads(int(cfg.trainer.threads))
    device = _device(cfg.trainer.device)
    head = cfg.get("head", "classifier")

    with phases("data"):
        task = gdata.load_task(cfg.task, cfg.data)
        shots = draw_for_run(cfg, task)  # the checks python -m gradft.data makes too
        eval_set = eval_examples(task.eval, cfg.eval.max_examples)
    phases.start("model_load")
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
    demos, scorer = None, model  # scorer: the model evaluation runs (icl: shares the demonstrations' KV cache)
    if icl:  # the demonstrations go into every prompt row; a causal LM computes their KV cache once
        demos, scorer = attach_demonstrations(collate, shots, cfg.seed, model, tok, cfg.method.context)
    eval_bs = cfg.method.eval_batch_size if icl else cfg.eval.batch_size
    phases.stop("model_load")
    with phases("tracker"):
        tracker = Tracker(cfg, out)
    # bf16: autocast over training and evaluation; weights, optimizer state and guidance's differences stay fp32
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.trainer.get("precision", "fp32") == "bf16")
    amp.__enter__()
    failed = True
    try:
        metric_space = ParamSpace(backbone) if cfg.metrics.space == "backbone" else space
        t_train = time.perf_counter()
        trainer = monitor = guidance = None
        steps, length = 0, {}
        if trains:
            trainer, monitor, guidance, steps, length = _train(cfg, task, shots, model, space, metric_space,
                                                               collate, device, tracker, report, tok, phases)
        train_time = time.perf_counter() - t_train

        metric_names = list(cfg.task.get("metrics", []))
        n_cls = len(task.labels)
        metrics: dict[str, float] = {}
        scores: list = []  # per example and class, from the same pass: predictions.jsonl (gradft.trained.save)
        if "eval" in cfg.eval.splits:  # sweeps score only the selection split: never select on the reported one
            with phases("eval"):
                metrics = evaluate(scorer, eval_set, collate, eval_bs, device, metric_names, n_cls, scores=scores)
        metrics.update(monitor.summary() if monitor else GradientMonitor.empty_summary())
        # floors from the train pool (never the drawn, class-balanced shots), chance, and the eval split's own rate
        metrics.update(baselines([e.label for e in task.train_pool], [e.label for e in eval_set], n_cls))
        state = trainer.state if trainer else None
        results: dict[str, Any] = {
            "method": cfg.method.name if shots else "zero-shot",  # k = 0 applies no method
            "task": task.name, "shots": cfg.shots, "seed": cfg.seed,
            "data_seed": cfg.data_seed, "model": cfg.model.name, "head": head, "guidance": cfg.guidance.name,
            "config_key": config_key(cfg), "env": hardware(device), "metrics": metrics, "eval_examples": len(eval_set),
            "shot_ids": [e.idx for e in shots], "data": task.info,
            "trainable_params": space.numel if trains else 0, "metric_space_params": metric_space.numel,
            "steps": steps, "skipped_nonfinite": state.skipped_nonfinite if state else 0,
            **_length_record(trainer, length),
            "train_time_s": train_time, "wall_time_s": None, "history": state.history if state else {},
            "trace": {k: v for k, v in state.trace.items() if k.startswith(("guide/", "grad/"))} if state else {},
        }
        if demos is not None:  # demonstrations used per eval row (the selection split's are not counted)
            results["icl"] = demos.summary()
        if guidance is not None:
            results["guidance_version"] = guidance.cfg.version
            warnings = guidance.health(state.history["train/loss"])
            for w in warnings:
                log.warning("guidance (%s reading): %s", guidance.cfg.mode, w)
            # counts of every safeguard that acted, and the unstable-guidance sentences (none: an empty list)
            results["guidance_stats"] = {**guidance.counts, "mode": guidance.cfg.mode, "warnings": warnings}
            for key, values in state.trace.items():  # means of R_dir, R_mag, R_grad, cosines, ‖Hv‖/‖g‖
                if key.startswith("guide/"):
                    mean = sum(v for _, v in values) / len(values)
                    results["guidance_stats"][key.removeprefix("guide/") + "_mean"] = mean
        if "select" in cfg.eval.splits:
            with phases("select_eval"):
                results["select_metrics"] = evaluate(scorer, task.select, collate, eval_bs, device,
                                                     metric_names, n_cls, "select")
        with phases("save"):  # save.model / save.predictions: the trained model and per-example predictions
            results["saved"] = save_run(out, cfg, model, tok, task, eval_set, scores)
        results["wall_time_s"] = time.perf_counter() - t0
        results["profile"] = {**phases.seconds, "other": results["wall_time_s"] - sum(phases.seconds.values())}
        write_results(out, results, cfg)
        tracker.summary(summary_keys(metrics))
        split = "accuracy" if "accuracy" in metrics else "select accuracy"
        log.info("%s %s k=%d seed=%d: %s %.4f, stability %.3f, alignment %.3f (%.1fs) -> %s",
                 results["method"], task.name, cfg.shots, cfg.seed, split,
                 metrics.get("accuracy", results.get("select_metrics", {}).get("accuracy", float("nan"))),
                 metrics["gradient_stability"], metrics["directional_alignment"], results["wall_time_s"], out)
        failed = False
        return results
    finally:
        amp.__exit__(None, None, None)
        tracker.finish(failed)

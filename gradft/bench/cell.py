"""``make bench`` (part 4): where one Table 1 cell's wall time goes, beside a plain peft loop doing the same work.

Owns the cell benchmark only. The cell is ``run(cfg)`` itself (default: MiniLM, LoRA, RTE, 32 shots, 80 steps,
gradient metrics every 4 steps, the full RTE val split), whose results.json ``profile`` splits the wall time into
data (task files + sampling), model_load (backbone + method + collator), tracker (W&B), d_task (the k-shot gradient
of the metrics and guidance), steps (optimisation steps alone), metric_passes (the gradient-metric passes), eval,
select_eval, other (logging) and validate_write_finish (config checks, results.json, W&B finish). The reference is
a plain loop: the same backbone loaded the same way, peft LoRA, AdamW + linear schedule over the same shots and
step count, then the same val examples scored in ``inference_mode``, with no gradft code in its loop. With
``head=lm`` (verbalizer tasks: BoolQ, CB, RTE, ...) the twin is the textbook prompt loop: peft LoRA on the causal
LM, the label words' logits at each prompt's last token (``logits_to_keep``, as gradft does), cross-entropy. Both run in
this process, one after the other, each timed in wall and process-CPU seconds (CPU time is robust to other load).
Writes ``reports/bench_cell.json``.

    python -m gradft.bench.cell [--model smollm2 --overrides head=lm ...] [--threads 2]
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import tempfile
import time
from typing import Any

import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import get_linear_schedule_with_warmup

from gradft import data as gdata
from gradft.bench.step import compose_cfg
from gradft.config.nodes import train_steps
from gradft.config.prompt import prompt_spec
from gradft.data.prompting import PromptCollator
from gradft.models import load_backbone
from gradft.run import run
from gradft.tracking import atomic_write

CELL = ["task=rte", "method=lora", "shots=32", "trainer.epochs=20", "metrics.every=4", "logger.mode=disabled",
        "save.model=false"]  # the plain twin saves nothing either


def _lm_label_logits(model, b: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, C) label-word logits at each row's answer position (right-padded prompts: the last real token); the LM
    head only on the batch's distinct answer positions (``logits_to_keep`` as a tensor), as gradft does."""
    ids, answer = b["input_ids"], b["answer_index"]
    keep = answer.unique()
    logits = model(input_ids=ids, attention_mask=b["attention_mask"], logits_to_keep=keep).logits
    return logits[torch.arange(len(ids)), torch.searchsorted(keep, answer)][:, b["label_token_ids"]].float()


def plain_loop(cfg) -> dict[str, float]:
    """LoRA fine-tuning and evaluation of the cell's shots and val split with peft + torch alone."""
    t0, c0 = time.perf_counter(), time.process_time()
    lm = cfg.get("head", "classifier") == "lm"
    task = gdata.load_task(cfg.task, cfg.data)
    if lm and task.multiple_choice:
        raise SystemExit("the plain twin of a head=lm cell scores label words: pick a verbalizer task (not COPA), "
                         "or pass --no-plain")
    shots = gdata.sample_shots(task.train_pool, cfg.shots, cfg.data_seed, cfg.data.balance)
    torch.manual_seed(cfg.seed)
    model, tok = load_backbone(cfg.model, len(task.labels), cfg.paths.cache_dir, "lm" if lm else "classifier")
    m = cfg.method
    model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM if lm else TaskType.SEQ_CLS, r=m.r,
                                             lora_alpha=m.alpha, lora_dropout=m.dropout,
                                             target_modules=m.target_modules))
    if lm:  # tokenisation only: the prompt text and the answer position
        spec = prompt_spec(cfg.task, len(task.labels), False)
        collate = PromptCollator(tok, spec.max_length or cfg.model.max_length, spec, "causal")
        logits_of = functools.partial(_lm_label_logits, model)
    else:
        collate = gdata.Collator(tok, cfg.model.max_length, task.multiple_choice)
        logits_of = lambda b: model(**{k: v for k, v in b.items() if k != "labels"}).logits  # noqa: E731
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=m.lr, weight_decay=cfg.trainer.weight_decay)
    steps = train_steps(cfg, len(shots))
    sched = get_linear_schedule_with_warmup(opt, int(cfg.trainer.warmup_ratio * steps), steps)
    bs = cfg.trainer.batch_size
    batches = [collate(shots[i:i + bs]) for i in range(0, len(shots), bs)]
    t_train = time.perf_counter()
    model.train()
    for step in range(steps):
        b = batches[step % len(batches)]
        torch.nn.functional.cross_entropy(logits_of(b), b["labels"]).backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.trainer.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    t_eval = time.perf_counter()
    model.eval()
    eval_set = task.eval[: cfg.eval.max_examples] if cfg.eval.max_examples else task.eval
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(eval_set), cfg.eval.batch_size):
            b = collate(eval_set[i:i + cfg.eval.batch_size])
            correct += int((logits_of(b).argmax(-1) == b["labels"]).sum())
    end = time.perf_counter()
    return {"wall_s": end - t0, "cpu_s": time.process_time() - c0, "train_s": t_eval - t_train,
            "eval_s": end - t_eval, "setup_s": t_train - t0, "steps": steps, "accuracy": correct / len(eval_set)}


def gradft_cell(cfg) -> dict[str, Any]:
    t0, c0 = time.perf_counter(), time.process_time()
    res = run(cfg, cfg.paths.output_dir)
    wall = time.perf_counter() - t0
    # the run's own profile ends where results.json is written; config checks before it and writing + W&B finish
    # after it are the rest of this call's wall time
    profile = {**res["profile"], "validate_write_finish": max(0.0, wall - sum(res["profile"].values()))}
    return {"wall_s": wall, "cpu_s": time.process_time() - c0, "profile": profile,
            "steps": res["steps"], "accuracy": res["metrics"]["accuracy"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m gradft.bench.cell", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="minilm")
    p.add_argument("--overrides", nargs="*", default=[], help="on top of the cell: " + " ".join(CELL))
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--no-plain", action="store_true", help="profile the cell only (no plain twin)")
    p.add_argument("--out", default="reports/bench_cell.json")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [bench_cell] %(levelname)s %(message)s")
    torch.set_num_threads(a.threads)
    run_dir = tempfile.mkdtemp(prefix="gradft-bench-cell-")  # the cell's results.json: not the report, and not shared
    cfg = compose_cfg(a.model, [*CELL, *a.overrides, f"paths.output_dir={run_dir}"])
    cell = gradft_cell(cfg)
    result: dict[str, Any] = {"model": a.model, "overrides": [*CELL, *a.overrides], "threads": a.threads,
                              "gradft": cell, "loadavg_1min": os.getloadavg()[0],
                              "command": "python -m gradft.bench.cell " + " ".join(sys.argv[1:] if argv is None
                                                                                   else argv)}
    print(f"gradft cell ({a.model} {' '.join(a.overrides)}): {cell['wall_s']:.1f} s wall, {cell['cpu_s']:.1f} s CPU, "
          f"{cell['steps']} steps, accuracy {cell['accuracy']:.4f}")
    for k, v in sorted(cell["profile"].items(), key=lambda kv: -kv[1]):
        print(f"  {k:<14}{v:>8.1f} s  {100 * v / cell['wall_s']:>5.1f}%")
    if not a.no_plain:
        print("plain peft loop: the same backbone, shots, steps and eval examples ...", flush=True)
        plain = result["plain"] = plain_loop(cfg)
        result["ratio_cell_plain"] = cell["wall_s"] / plain["wall_s"]
        result["ratio_cell_plain_cpu"] = cell["cpu_s"] / plain["cpu_s"]
        print(f"plain peft loop: {plain['wall_s']:.1f} s wall, {plain['cpu_s']:.1f} s CPU (setup {plain['setup_s']:.1f}"
              f", train {plain['train_s']:.1f}, eval {plain['eval_s']:.1f}), accuracy {plain['accuracy']:.4f}")
        print(f"ratio_cell_plain = {result['ratio_cell_plain']:.3f} [CPU time {result['ratio_cell_plain_cpu']:.3f}] "
              f"(target ≤ 1.15)")
    clean = json.loads(json.dumps(result, default=float), parse_constant=lambda c: None)
    atomic_write(a.out, json.dumps(clean, indent=2) + "\n")
    print(f"-> {a.out}")
    return clean


if __name__ == "__main__":
    main()

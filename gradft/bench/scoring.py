"""``make bench`` (second part): candidate scoring for multiple choice (COPA, ``head=lm``) with and without prefix
reuse, in tokens scored per second.

Owns this benchmark only. The COPA examples are collated twice by ``gradft.data.prompting.PromptCollator``: once as
prompt + candidate rows (every prompt computed C = 2 times), once with prefix reuse (each prompt once, its KV cache
repeated for the candidates). Both are scored by ``gradft.forward.logits_of``, the code path of evaluation and
training, round-robin so that load drift hits both alike: under no_grad (evaluation) and as forward + backward of
the loss (a training step without the optimiser). "Tokens scored" are candidate tokens, the same in both modes;
"tokens computed" counts every non-pad token the model runs. Writes ``reports/bench_scoring.json``.

    python -m gradft.bench.scoring [--model smollm2] [--examples 64] [--batch 16] [--rounds 3]
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # see gradft/bench/__main__.py: passive OpenMP waits on a shared machine
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import statistics
import time
from typing import Any

import torch
from hydra import compose, initialize_config_dir

from gradft import CONF_DIR
from gradft import data as gdata
from gradft.config.prompt import prompt_spec
from gradft.data.prompting import PromptCollator
from gradft.forward import logits_of
from gradft.models import load_backbone
from gradft.tracking import atomic_write

MODES = ("no_reuse", "reuse")


def _tokens(batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(candidate tokens scored, non-pad tokens computed) of a collated batch."""
    if "prefix_ids" in batch:
        scored = int(batch["attention_mask"].sum())
        return scored, int(batch["prefix_mask"].sum()) + scored
    return int(batch["target_mask"].sum()), int(batch["attention_mask"].sum())


def _pass(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], train: bool) -> float:
    t = time.perf_counter()
    for b in batches:
        if train:
            loss = torch.nn.functional.cross_entropy(logits_of(model, b), b["labels"])
            loss.backward()
        else:
            with torch.no_grad():
                logits_of(model, b)
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m gradft.bench.scoring", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2", help="a conf/model/*.yaml name (a causal LM)")
    p.add_argument("--examples", type=int, default=64, help="COPA validation examples scored per pass")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (each mode once per round, per kind)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--out", default="reports/bench_scoring.json")
    a = p.parse_args(argv)
    if a.examples < 1 or a.batch < 1 or a.rounds < 1:
        p.error("--examples, --batch and --rounds must be ≥ 1")
    threads_before = torch.get_num_threads()
    torch.set_num_threads(a.threads)
    try:
        return _bench(a)
    finally:
        torch.set_num_threads(threads_before)


def _bench(a: argparse.Namespace) -> dict[str, Any]:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={a.model}", "task=copa", "head=lm"])
    task = gdata.load_task(cfg.task, cfg.data)
    examples = task.eval[: a.examples]
    torch.manual_seed(0)
    model, tok = load_backbone(cfg.model, 1, cfg.paths.cache_dir, "lm")
    model.eval()  # no dropout: both modes compute the same function
    spec = prompt_spec(cfg.task, len(task.labels), True)
    batches = {m: list(gdata.iterate_batches(examples, a.batch, PromptCollator(tok, cfg.model.max_length, spec,
                                                                                "causal", m == "reuse"), False))
               for m in MODES}
    with torch.no_grad():
        scores = {m: torch.cat([logits_of(model, b) for b in batches[m]]) for m in MODES}  # also the warm-up
    max_diff = float((scores["reuse"] - scores["no_reuse"]).abs().max())
    counts = {m: [sum(x) for x in zip(*(_tokens(b) for b in batches[m]), strict=True)] for m in MODES}
    times: dict[str, dict[str, list[float]]] = {k: {m: [] for m in MODES} for k in ("eval", "train")}
    for r in range(a.rounds):
        for kind in ("eval", "train"):
            for m in (MODES if r % 2 == 0 else MODES[::-1]):
                times[kind][m].append(_pass(model, batches[m], kind == "train"))
    out: dict[str, Any] = {"model": a.model, "examples": len(examples), "batch": a.batch, "rounds": a.rounds,
                           "threads": a.threads, "max_abs_score_diff": max_diff, "modes": {}}
    for m in MODES:
        scored, computed = counts[m]
        out["modes"][m] = {"tokens_scored": scored, "tokens_computed": computed}
        for kind in ("eval", "train"):
            med = statistics.median(times[kind][m])
            out["modes"][m][f"{kind}_median_s"] = med
            out["modes"][m][f"{kind}_tokens_scored_per_s"] = scored / med
    for kind in ("eval", "train"):
        full, reuse = (out["modes"][m][f"{kind}_median_s"] for m in MODES)
        out[f"speedup_{kind}"] = full / reuse
    print(f"COPA candidate scoring, {a.model}, {len(examples)} examples, batch {a.batch}, {a.threads} threads, "
          f"median of {a.rounds} rounds (max |score diff| between modes {max_diff:.2e})")
    print(f"{'mode':<10}{'scored':>8}{'computed':>10}{'eval tok/s':>12}{'train tok/s':>13}")
    for m in MODES:
        d = out["modes"][m]
        print(f"{m:<10}{d['tokens_scored']:>8}{d['tokens_computed']:>10}{d['eval_tokens_scored_per_s']:>12.1f}"
              f"{d['train_tokens_scored_per_s']:>13.1f}")
    print(f"prefix reuse: {out['speedup_eval']:.2f}x (eval), {out['speedup_train']:.2f}x (forward+backward)")
    atomic_write(a.out, json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()

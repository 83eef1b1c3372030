"""``make bench``: step time, memory, passes and FLOP rate of each method's optimisation step, all in one process.

Owns the benchmark only. Each gradft variant is built from the composed Hydra config (``conf/``) and stepped by
``gradft.train.Trainer.step`` itself (monitor=None, no scheduler): the code path that trains is the one timed.
``plain_lora`` is the same LoRA step as a plain peft + PyTorch loop (backbone from ``gradft.models.load_backbone``;
no gradft code inside its step): the reference for gradft's overhead. Variants are timed round-robin (round r
starts at variant r mod n, then one GEMM), so load drift hits all alike and cancels in the ratios. Before the rounds,
each variant's last warm-up step runs under pass counters (forward hook on the top module; wrappers around
torch.autograd.grad/backward) and ``FlopCounterMode``, and one more under the memory probe. Prints a table and
writes ``reports/bench.json`` (docs/bench.md says what each number means).

    python -m gradft.bench [--steps 20] [--warmup 2] [--model minilm] [--variants lora,ours] [--profile ours]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from peft import LoraConfig, TaskType, get_peft_model
from torch import Tensor, nn
from torch.profiler import ProfilerActivity
from torch.profiler import profile as torch_profile
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from gradft import CONF_DIR
from gradft.config.guidance import GuidanceConfig
from gradft.config.nodes import TrainerConfig
from gradft.forward import set_gradient
from gradft.gradients import ParamSpace
from gradft.guidance import StructuredGuidance
from gradft.methods import apply_method, trainable_parameters
from gradft.models import load_backbone
from gradft.tracking import atomic_write
from gradft.train import Trainer

# variant -> Hydra overrides on top of conf/config.yaml (plain_lora reads method=lora's values, then skips gradft)
VARIANTS: dict[str, list[str]] = {
    **{m: [f"method={m}"] for m in ("full", "adapter", "lora", "prompt")},
    "ours": ["method=ours", "guidance.every=1"],  # the default estimator (conf/guidance/structured.yaml)
    "ours_every4": ["method=ours", "guidance.every=4"],
    "ours_fd": ["method=ours", "guidance.every=1", "guidance.hvp=finite_difference"],
    "ours_central": ["method=ours", "guidance.every=1", "guidance.hvp=central"],
    "ours_sub": ["method=ours", "guidance.every=1", "guidance.hvp=sub_batch"],
    "ours_exact": ["method=ours", "guidance.every=1", "guidance.hvp=double_backward"],
    "ours_update": ["method=ours_update"],  # the update reading: the plain step's passes + vector ops (issue 27)
    "plain_lora": ["method=lora"],
}
RATIOS = {"ratio_ours_lora": ("ours", "lora"), "ratio_ours_every4_lora": ("ours_every4", "lora"),
          "ratio_ours_fd_lora": ("ours_fd", "lora"), "ratio_ours_central_lora": ("ours_central", "lora"),
          "ratio_ours_sub_lora": ("ours_sub", "lora"), "ratio_ours_exact_lora": ("ours_exact", "lora"),
          "ratio_ours_update_lora": ("ours_update", "lora"), "ratio_lora_plain": ("lora", "plain_lora")}
# each must be ≤ (issue 10). From the passes, with F, B = forward, backward over the batch, O = clip + AdamW, G =
# guidance's vector ops (O ≈ G ≈ 1 ms for LoRA's 74k): lora = F+B+O; finite_difference 2F+2B+O+G → ≈ 2.00;
# sub_batch (m = 2 of 8) (1 + 2/8)(F+B)+O+G → ≈ 1.25; its every=4 → (4 + 2/8)/4 ≈ 1.06; update F+B+O+G → ≤ 1.05
TARGETS = {"ratio_ours_lora": 1.3, "ratio_ours_fd_lora": 2.0, "ratio_ours_every4_lora": 1.1,
           "ratio_ours_update_lora": 1.05, "ratio_lora_plain": 1.03}
MB = 2**20
# torch's FLOP counter knows the CUDA SDPA kernels but not the CPU flash kernel: same formulas (4·B·H·L²·d fwd)
SDPA_CPU = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
        lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(q, k, v),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
        lambda go, q, k, v, *a, out_shape=None, **kw: sdpa_backward_flop_count(go, q, k, v),
}


@dataclass
class Variant:
    unit: Callable[[], None]  # one timed unit: `steps` optimisation steps
    model: nn.Module
    trainable: int
    steps: int = 1  # ours_every4: a block of 4 steps (1 guided + 3 plain), timed whole and divided by 4
    times: list[float] = field(default_factory=list)  # wall seconds per step, one per round
    cpu: list[float] = field(default_factory=list)  # process CPU seconds per step (all threads), one per round
    info: dict[str, float] = field(default_factory=dict)


def compose_cfg(model: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[f"model={model}", "logger.mode=disabled",
                                            "paths.output_dir=/tmp/gradft-bench", *overrides])


def make_batch(vocab: int, names: list[str], b: int, seq: int, device: torch.device) -> dict[str, Tensor]:
    """b × seq random token ids (no padding: every position attends), ids ≥ 1000 to skip the special tokens."""
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, vocab, (b, seq), generator=g),
             "attention_mask": torch.ones(b, seq, dtype=torch.long), "labels": torch.randint(0, 2, (b,), generator=g)}
    if "token_type_ids" in names:
        batch["token_type_ids"] = torch.zeros(b, seq, dtype=torch.long)
    return {k: v.to(device) for k, v in batch.items()}


def build(name: str, cfg: DictConfig, batch: dict[str, Tensor], device: torch.device) -> Variant:
    torch.manual_seed(0)  # every variant starts from the same head / LoRA init
    model, _ = load_backbone(cfg.model, 2, cfg.paths.cache_dir)
    if name == "plain_lora":  # the reference: peft + torch only, nothing from gradft below this line

        m = cfg.method
        model = get_peft_model(model, LoraConfig(
            task_type=TaskType.SEQ_CLS, r=m.r, lora_alpha=m.alpha, lora_dropout=m.dropout,
            target_modules=list(m.target_modules) if m.target_modules else None)).to(device).train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=m.lr, weight_decay=cfg.trainer.weight_decay)
        clip = cfg.trainer.max_grad_norm or float("inf")

        def plain() -> None:  # the whole step: forward (HF's own cross-entropy), backward, clip, AdamW, zero
            model(**batch).loss.backward()
            nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            opt.zero_grad(set_to_none=True)

        return Variant(plain, model, sum(p.numel() for p in params))
    model = apply_method(model, cfg.method).to(device).train()
    space = ParamSpace(trainable_parameters(model))
    guidance = None
    if cfg.guidance.name != "none":
        guidance = StructuredGuidance(GuidanceConfig.from_cfg(cfg.guidance), model, space)
        guidance.start(lambda: set_gradient(model, space, [batch], device))  # as run() does (d_prior=init only)
    opt = torch.optim.AdamW(space.params, lr=cfg.method.lr, weight_decay=cfg.trainer.weight_decay)
    trainer = Trainer(model, space, opt, None, device, TrainerConfig.from_cfg(cfg.trainer), guidance=guidance)
    k = guidance.cfg.every if guidance is not None else 1

    def unit() -> None:
        assert trainer.state.step % k == 0  # blocks stay aligned: exactly one guided step per block
        for _ in range(k):
            trainer.step(batch)

    return Variant(unit, model, space.numel, steps=k)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """Wall and process-CPU seconds of ``fn()``; CPU time skips time spent descheduled: a load-robust cost."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync()
    return time.perf_counter() - t0, time.process_time() - c0


@contextmanager
def count_passes(model: nn.Module) -> Iterator[dict[str, int]]:
    """Counts forward calls of the top module and every backward pass (autograd.grad or .backward) while open."""
    n = {"fwd": 0, "bwd": 0}
    grad, backward = torch.autograd.grad, torch.autograd.backward

    def counting(f: Callable) -> Callable:
        return lambda *a, **kw: (n.__setitem__("bwd", n["bwd"] + 1), f(*a, **kw))[1]

    hook = model.register_forward_hook(lambda *_: n.__setitem__("fwd", n["fwd"] + 1))
    torch.autograd.grad, torch.autograd.backward = counting(grad), counting(backward)
    try:
        yield n
    finally:
        torch.autograd.grad, torch.autograd.backward = grad, backward
        hook.remove()


class Memory:
    """GPU: torch.cuda.max_memory_allocated. CPU (Linux): the kernel's RSS high-water mark VmHWM, reset through
    /proc/self/clear_refs, with glibc's free pages handed back (malloc_trim) first so a step's new pages show."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only
        self.desc = "torch.cuda.max_memory_allocated (MiB)" if self.cuda else (
            "RSS MiB: state = growth over build + warm-up; step = VmHWM in a step - RSS before it; peak = state + step")

    def _status(self, key: str) -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key)) / MB

    def now(self) -> float:
        gc.collect(1)  # the young generations: a step's cycles, without a full (0.3 s) collection
        if self.cuda:
            return torch.cuda.memory_allocated() / MB
        if self.trim:
            self.trim(0)
        return self._status("VmRSS:")

    def step_peak(self, fn: Callable[[], None]) -> float:
        before = self.now()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # VmHWM := VmRSS
        fn()
        peak = torch.cuda.max_memory_allocated() / MB if self.cuda else self._status("VmHWM:")
        return max(peak - before, 0.0)


def profile(v: Variant, steps: int, device: torch.device) -> None:
    """torch.profiler over ``steps`` units of one variant: the top ops by self time (where the time goes)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as p:
        timed(lambda: [v.unit() for _ in range(steps)], device)
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m gradft.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed rounds (each variant once per round)")
    p.add_argument("--warmup", type=int, default=2, help="untimed units per variant first (at least 2)")
    p.add_argument("--model", default="minilm", help="a conf/model/*.yaml name")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of: " + ",".join(VARIANTS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--gemm", type=int, default=2048, help="n of the n×n fp32 GEMM that measures the machine's rate")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count(), help="torch threads (default: the cores this process may use)")
    p.add_argument("--budget", type=float, default=420, help="seconds of timed rounds, then stop (after ≥ 3)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="reports/bench.json")
    p.add_argument("--profile", metavar="VARIANT", help="profile min(--steps, 3) units of one variant; writes no json")
    a = p.parse_args(argv)
    a.argv = sys.argv[1:] if argv is None else list(argv)
    names = [a.profile] if a.profile else [n for n in a.variants.split(",") if n]
    if unknown := [n for n in names if n not in VARIANTS]:
        p.error(f"unknown variant(s) {unknown}: choose from {', '.join(VARIANTS)}")
    if a.steps < 1 or a.warmup < 1:
        p.error("--steps and --warmup must be ≥ 1")
    threads_before = torch.get_num_threads()
    torch.set_num_threads(a.threads)
    try:
        return _bench(a, names)
    finally:  # callers (tests) get their thread count back
        torch.set_num_threads(threads_before)


def _bench(a: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    load_before, device = os.getloadavg()[0], torch.device(a.device)
    print(f"torch {torch.__version__}, {a.threads} threads (torch.get_num_threads()={torch.get_num_threads()}), "
          f"{device}, model={a.model}, batch {a.batch}×{a.seq} random token ids, fp32")

    # the GEMM: C = A·B, n×n fp32, 2n³ FLOPs; also warms up the BLAS threads before anything is measured
    ga, gb, gc_ = (torch.randn(a.gemm, a.gemm, device=device) for _ in range(3))
    gemm = lambda: torch.mm(ga, gb, out=gc_)  # noqa: E731
    gemm(), gemm()
    mem = Memory(device)
    cfg0 = compose_cfg(a.model, [])  # the plain config: model + paths
    probe, tok = load_backbone(cfg0.model, 2, cfg0.paths.cache_dir)  # imports the model's code up front
    batch = make_batch(probe.config.vocab_size, list(tok.model_input_names), a.batch, a.seq, device)
    probe.to(device).train()(**batch).loss.backward()  # one-time costs (autograd threads, caches) land here

    variants: dict[str, Variant] = {}
    for name in names:  # built one after another: each one's memory is what RSS grew by while it was built
        t0, base = time.perf_counter(), mem.now()
        v = variants[name] = build(name, compose_cfg(a.model, VARIANTS[name]), batch, device)
        # warm-up; its last unit is also the measured one: passes (counted) and FLOPs (FlopCounterMode). Not the
        # first: ours' step 0 is plain in effect (no d_prior yet and relative τ = ‖g‖ give v = 0, so no HVP pass)
        for _ in range(max(a.warmup, 2) - 1):
            v.unit()
        with count_passes(v.model) as n, FlopCounterMode(display=False, custom_mapping=SDPA_CPU) as fc:
            v.unit()
        v.info["fwd_per_step"], v.info["bwd_per_step"] = n["fwd"] / v.steps, n["bwd"] / v.steps
        v.info["flops_per_step"] = fc.get_total_flops() / v.steps
        if a.profile:
            return profile(v, min(a.steps, 3), device) or {}
        v.info["state_mb"] = mem.now() - base  # weights + what the method adds + AdamW's two moments
        v.info["step_mb"] = mem.step_peak(v.unit)  # activations, graph, gradients: what one step adds on top
        v.info["peak_mb"] = v.info["state_mb"] + v.info["step_mb"]
        print(f"  built {name}: {v.trainable:,} trainable, {v.info['state_mb']:.0f} MiB state, "
              f"{time.perf_counter() - t0:.1f} s", flush=True)

    # timed rounds: rotate the start so no variant always follows the same one; one GEMM per round as well
    gemm_s: list[float] = []
    t0 = time.perf_counter()
    for r in range(a.steps):
        if r >= 3 and time.perf_counter() - t0 > a.budget:  # a loaded machine: fewer rounds, still ≥ 3
            break
        for name in names[r % len(names):] + names[: r % len(names)]:
            v = variants[name]
            wall, cpu = timed(v.unit, device)
            v.times.append(wall / v.steps)
            v.cpu.append(cpu / v.steps)
        gemm_s.append(timed(gemm, device)[0])
        print(f"  round {r + 1}/{a.steps}: {time.perf_counter() - t0:.0f} s", end="\r", flush=True)
    print(f"\n{len(gemm_s)} rounds, {time.perf_counter() - t0:.0f} s")
    gemm_gflops = 2 * a.gemm**3 / statistics.median(gemm_s) / 1e9

    rows = {}
    for name, v in variants.items():
        med = statistics.median(v.times)
        # achieved rate = counted FLOPs of one step / its median time; as a fraction of the GEMM rate
        gflops = v.info["flops_per_step"] / med / 1e9
        rows[name] = {"median_s": med, "min_s": min(v.times), "max_s": max(v.times), "times_s": v.times,
                      "cpu_median_s": statistics.median(v.cpu), "steps_per_unit": v.steps, **v.info,
                      "trainable_params": v.trainable, "gflop_per_step": v.info["flops_per_step"] / 1e9,
                      "gflops": gflops, "gemm_fraction": gflops / gemm_gflops}
    result: dict[str, Any] = {
        "model": a.model, "batch": {"size": a.batch, "seq_len": a.seq, "inputs": "random token ids, no padding"},
        "dtype": "float32", "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "steps": a.steps, "rounds": len(gemm_s), "warmup": a.warmup, "memory_measure": mem.desc,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (GOMP default)"),
        "flops_measure": "torch.utils.flop_counter.FlopCounterMode over one step (+ CPU SDPA formulas)",
        "gemm": {"n": a.gemm, "median_s": statistics.median(gemm_s), "gflops": gemm_gflops},
        "variants": rows, "median_s": {n: r["median_s"] for n, r in rows.items()},
        "peak_mb": {n: r["peak_mb"] for n, r in rows.items()}, "ratios_paired": {}, "ratios_cpu": {}, "targets": {},
        "command": "python -m gradft.bench " + " ".join(a.argv), "loadavg_1min": [load_before, os.getloadavg()[0]],
    }
    for key, (x, y) in RATIOS.items():
        if x in rows and y in rows:
            result[key] = rows[x]["median_s"] / rows[y]["median_s"]
            # paired: the median over rounds of the per-round ratio (cancels load changes slower than a round)
            result["ratios_paired"][key] = statistics.median(
                t / u for t, u in zip(variants[x].times, variants[y].times, strict=True))
            result["ratios_cpu"][key] = rows[x]["cpu_median_s"] / rows[y]["cpu_median_s"]
    for key, limit in TARGETS.items():  # consistent: the three estimates agree within 5% (else load noise rules)
        est = [result.get(key), result["ratios_paired"].get(key), result["ratios_cpu"].get(key)]
        result["targets"][key] = {"max": limit, "value": est[0], "pass": None if est[0] is None else est[0] <= limit,
                                  "consistent": None if est[0] is None else max(est) / min(est) <= 1.05}

    ref = rows.get("lora", {}).get("median_s")
    print(f"GEMM {a.gemm}×{a.gemm} fp32: {gemm_gflops:.1f} GFLOP/s;  memory: {mem.desc}")
    print(f"{'variant':<12}{'median s':>9}{'CPU s':>7}{'×lora':>7}{'fwd':>6}{'bwd':>6}{'GFLOP':>8}{'GFLOP/s':>9}"
          f"{'%GEMM':>7}{'trainable':>12}{'state MiB':>10}{'step MiB':>9}{'peak MiB':>9}")
    for name, r in rows.items():
        x = f"{r['median_s'] / ref:.2f}" if ref else "-"
        print(f"{name:<12}{r['median_s']:>9.3f}{r['cpu_median_s']:>7.2f}{x:>7}{r['fwd_per_step']:>6.2f}{r['bwd_per_step']:>6.2f}"
              f"{r['gflop_per_step']:>8.1f}{r['gflops']:>9.1f}{100 * r['gemm_fraction']:>6.0f}%"
              f"{r['trainable_params']:>12,}{r['state_mb']:>10.0f}{r['step_mb']:>9.0f}{r['peak_mb']:>9.0f}")
    for key in RATIOS:
        if key in result:
            t = result["targets"].get(key)
            verdict = "" if t is None else f"  (target ≤ {t['max']}: {'PASS' if t['pass'] else 'FAIL'}" + (
                ")" if t["consistent"] else "; estimates differ > 5%: load noise, re-run on a quiet machine)")
            print(f"{key} = {result[key]:.3f}  [paired {result['ratios_paired'][key]:.3f}, "
                  f"CPU time {result['ratios_cpu'][key]:.3f}]{verdict}")
    clean = json.loads(json.dumps(result, default=float), parse_constant=lambda c: None)  # NaN/inf -> null
    atomic_write(a.out, json.dumps(clean, indent=2) + "\n")
    print(f"-> {a.out}")
    return clean


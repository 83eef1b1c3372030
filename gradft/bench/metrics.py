"""How many gradient-metric points a run needs: ``python -m gradft.bench.metrics [--root results/estimators]``.

Owns the sampling study behind ``metrics.every``. Each metric point is one extra forward + backward over the whole
backbone (``GradientMonitor``), so its cost grows with the number of points; its value is the two Table 1 metrics,
gradient stability 1/(1 + σ/μ) of ‖g_t‖ and directional alignment mean_t cos(g_t, d_task) (docs/metrics.md). From the
per-point traces that committed runs keep (``trace`` in results.json: ``grad/norm``, ``grad/cos_task``), this
recomputes both metrics from every sub-sample a coarser ``metrics.every`` would have measured (every offset of a
stride s over the run's points) and reports, per stride, the points per run, the RMS deviation from the all-points
value, and — the scale that matters — the std of each metric across the runs (seeds and tasks), which is the noise
Table 1's comparisons already carry. Writes ``reports/bench_metrics.json``; never trains.

``--memory tiny_bert,tiny_llama,minilm,smollm2`` instead measures what the gradient metrics cost in memory, per model
and ``metrics.sketch`` mode (exact, sketch), each in a fresh process: the peak resident memory (VmHWM, reset after the
model is loaded) of building d_task over two batches and measuring g_t three times, minus the resident memory before
(CPU, LoRA on the model, metric space = the backbone, batches of 8 × 64 tokens). Mode ``none`` runs the same five
backward passes with every gradient dropped as it arrives: what the forward and backward cost by themselves. Writes
``reports/bench_metrics_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from gradft import CONF_DIR
from gradft.config.method import method_node
from gradft.forward import task_loss
from gradft.gradients import ParamSpace
from gradft.methods import apply_method
from gradft.metrics import gradient_monitor, sketched_gradient, stability, stream_grads
from gradft.models import backbone_parameters, load_backbone


def alignment(cosines: list[float]) -> float:
    return sum(cosines) / len(cosines)


def traces(root: str | Path) -> list[dict[str, Any]]:
    """(norms, cosines, every) of every run under root whose trace has the per-point gradient metrics."""
    out = []
    for path in sorted(Path(root).rglob("results.json")):
        r = json.loads(path.read_text())
        t = r.get("trace") or {}
        if len(t.get("grad/norm", [])) >= 4 and len(t.get("grad/cos_task", [])) >= 4:
            steps = [s for s, _ in t["grad/norm"]]
            out.append({"path": str(path), "norms": [v for _, v in t["grad/norm"]],
                        "cos": [v for _, v in t["grad/cos_task"]], "every": steps[1] - steps[0],
                        "steps": r["steps"]})
    return out


def study(runs: list[dict[str, Any]], strides: tuple[int, ...] = (1, 2, 3, 5)) -> dict[str, Any]:
    """Per stride s (measuring every s-th point, i.e. metrics.every × s): RMS deviation from the all-points metric."""
    full = [(stability(r["norms"]), alignment(r["cos"])) for r in runs]
    rows = []
    for s in strides:
        dev_s, dev_a, points = [], [], []
        for r, (fs, fa) in zip(runs, full, strict=True):
            for off in range(s):
                n, c = r["norms"][off::s], r["cos"][off::s]
                if len(n) < 2:
                    continue
                dev_s.append(stability(n) - fs)
                dev_a.append(alignment(c) - fa)
                points.append(len(n))
        rms = lambda d: math.sqrt(sum(x * x for x in d) / len(d)) if d else math.nan  # noqa: E731
        rows.append({"stride": s, "every": runs[0]["every"] * s if runs else None,
                     "points_per_run": sum(points) / len(points) if points else math.nan,
                     "rms_dev_stability": rms(dev_s), "rms_dev_alignment": rms(dev_a), "samples": len(dev_s)})
    sd = lambda v: math.sqrt(sum((x - sum(v) / len(v)) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else math.nan  # noqa: E731
    return {"runs": len(runs), "between_runs_std_stability": sd([f[0] for f in full]),
            "between_runs_std_alignment": sd([f[1] for f in full]), "strides": rows}


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_one(model_name: str, mode: str) -> dict[str, Any]:
    """In this process: load ``model_name``, then the peak extra resident memory of the gradient metrics."""
    torch.manual_seed(0)
    cfg = OmegaConf.load(Path(CONF_DIR) / "model" / f"{model_name}.yaml")
    model, tok = load_backbone(cfg, 2, str(Path.home() / ".cache" / "gradft"), "classifier")
    space = ParamSpace(backbone_parameters(model))
    model = apply_method(model, method_node("lora"))
    gen = torch.Generator().manual_seed(0)
    batches = [{"input_ids": (ids := torch.randint(1000, 5000, (8, 64), generator=gen)),
                "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (8,), generator=gen)}
               for _ in range(3)]
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = 0
    before = _rss_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    t0 = time.perf_counter()
    model.eval()
    if mode == "none":  # the same five backward passes into the backbone, every gradient dropped at once
        with space.requiring_grad():
            for b in [*batches[:2], *batches]:
                stream_grads(task_loss(model, b), space.params, lambda i, g: None)
        alignment = math.nan
    else:
        monitor = gradient_monitor(model, space, batches[:2], torch.device("cpu"), mode)
        model.eval()
        with space.requiring_grad():
            for b in batches:  # three metric steps: g_t, then g_{t-1} is held
                if monitor.sketch is None:
                    monitor.observe(space.grad(task_loss(model, b)))
                else:
                    sk, sq = sketched_gradient(task_loss(model, b), space.params, monitor.sketch)
                    monitor.observe(sk, math.sqrt(sq))
        alignment = monitor.summary()["directional_alignment"]
    peak = _rss_kb("VmHWM") - before
    return {"model": model_name, "mode": mode, "metric_space_params": space.numel,
            "flat_fp32_copy_mb": space.numel * 4 / 2**20, "peak_extra_mb": peak / 1024,
            "seconds": time.perf_counter() - t0, "alignment": alignment}


def memory(models: list[str], out: str) -> list[dict[str, Any]]:
    rows = []
    for m in models:
        for mode in ("none", "exact", "sketch"):
            res = subprocess.run([sys.executable, "-m", "gradft.bench.metrics", "--memory-one", m, mode],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print("| model | metric-space params | one fp32 copy | peak extra: the passes alone | exact | sketch | "
          "alignment exact / sketch |")
    print("|---|---|---|---|---|---|---|")
    for n, e, k in zip(rows[::3], rows[1::3], rows[2::3], strict=True):
        print(f"| {e['model']} | {e['metric_space_params'] / 1e6:.1f}M | {e['flat_fp32_copy_mb']:.0f} MB | "
              f"{n['peak_extra_mb']:.0f} MB | {e['peak_extra_mb']:.0f} MB | {k['peak_extra_mb']:.0f} MB | "
              f"{e['alignment']:.4f} / {k['alignment']:.4f} |")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"rows": rows, "command": "python -m gradft.bench.metrics --memory "
                                     + ",".join(models)}, indent=1))
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="results/estimators", help="committed runs with metrics on")
    ap.add_argument("--out", default=None, help="default reports/bench_metrics.json (--memory: _memory.json)")
    ap.add_argument("--memory", default=None, help="comma-separated conf/model names: the memory table instead")
    ap.add_argument("--memory-one", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.memory_one:
        res = memory_one(*a.memory_one)
        print(json.dumps(res))
        return res
    if a.memory:
        return {"rows": memory(a.memory.split(","), a.out or "reports/bench_metrics_memory.json")}
    a.out = a.out or "reports/bench_metrics.json"
    runs = traces(a.root)
    if not runs:
        raise SystemExit(f"no run under {a.root} has a gradient-metric trace (metrics.every > 0)")
    res = {**study(runs), "root": a.root, "command": "python -m gradft.bench.metrics " + " ".join(argv or [])}
    print(f"{res['runs']} runs; between-run std: stability {res['between_runs_std_stability']:.4f}, alignment "
          f"{res['between_runs_std_alignment']:.4f}")
    print("| metrics.every | points / run | RMS dev. stability | RMS dev. alignment |\n|---|---|---|---|")
    for r in res["strides"]:
        print(f"| {r['every']} | {r['points_per_run']:.1f} | {r['rms_dev_stability']:.4f} | "
              f"{r['rms_dev_alignment']:.4f} |")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()

"""The H·v estimator table of docs/guidance.md, from committed runs only:
``python -m gradft.report.estimators [--root results/estimators] [--bench reports/bench.json] [--out FILE]``.

Owns: pairing each estimator's runs with the exact reference's (``double_backward``) over (task, seed), the paired
differences of accuracy, directional alignment and gradient stability with their 95 % bootstrap CIs and p-values,
the counted passes of each estimator and, when ``make bench`` has written them, its measured step ratio to a LoRA
step. "Within noise" means: the 95 % CI of the paired difference contains 0 for both accuracy and alignment.
Never trains anything.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

import yaml

from gradft.experiments.resultfile import inspect, result_files
from gradft.experiments.stats import paired_comparison

log = logging.getLogger("gradft.report.build")

REFERENCE = "double_backward"
DEFAULT = "finite_difference"  # conf/guidance/structured.yaml: bench variant "ours" runs it
METRICS = {"accuracy": "accuracy", "alignment": "directional_alignment", "stability": "gradient_stability"}
# passes per guided step, counted (b = batch, m = hvp_batch); the bench variant that measures each
PASSES = {"double_backward": ("1 fwd + 1 double bwd", "ours_exact"),
          "finite_difference": ("2 fwd + 2 bwd", "ours_fd"),
          "central": ("3 fwd + 3 bwd", "ours_central"),
          "sub_batch": ("(1 + m/b) fwd + bwd, 3 calls", "ours_sub")}


def collect(root: str | Path) -> dict[str, dict[tuple[str, int], dict[str, Any]]]:
    """{estimator: {(task, seed): run}} for every finished run under root (estimator read from its config.yaml)."""
    out: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
    for path in result_files(root):  # (not those moved to superseded/)
        v = inspect(path.parent)
        if not v.valid:
            log.warning("skipping %s: %s", path, v.reason)
            continue
        cfg, r = yaml.safe_load((path.parent / "config.yaml").read_text()), v.results
        hvp = cfg["guidance"]["hvp"] + (f"(m={cfg['guidance']['hvp_batch']})" if cfg["guidance"]["hvp"] == "sub_batch"
                                        and cfg["guidance"].get("hvp_batch") != 2 else "")
        r["_config"] = cfg
        out.setdefault(hvp, {})[(r["task"], int(r["seed"]))] = r
    return out


def _bench_ratios(path: str | Path | None) -> dict[str, float]:
    if not path or not Path(path).exists():
        return {}
    b = json.loads(Path(path).read_text())
    lora = b.get("median_s", {}).get("lora")
    return {k: v / lora for k, v in b.get("median_s", {}).items() if lora}


def _ratio(bench: dict[str, float], hvp: str) -> float:
    """The bench's step ratio of this estimator's variant (the default estimator's is also plain ``ours``)."""
    variant = PASSES.get(hvp, ("", ""))[1]
    if variant in bench:
        return bench[variant]
    return bench.get("ours", math.nan) if hvp == DEFAULT else math.nan


def table(runs: dict[str, dict[tuple[str, int], dict[str, Any]]], bench: dict[str, float]) -> list[dict[str, Any]]:
    """One row per estimator: means over its cells and paired differences against the reference's same cells."""
    ref = runs.get(REFERENCE, {})
    rows = []
    for hvp in sorted(runs, key=lambda h: (h != REFERENCE, h)):
        cells = runs[hvp]
        row: dict[str, Any] = {"hvp": hvp, "n": len(cells), "passes": PASSES.get(hvp.split("(")[0], ("?", ""))[0],
                               "ratio_lora": _ratio(bench, hvp.split("(")[0]),
                               "train_s": sum(r["train_time_s"] for r in cells.values()) / len(cells)}
        within = True
        for name, key in METRICS.items():
            vals = {c: r["metrics"][key] for c, r in cells.items()}
            row[name] = sum(vals.values()) / len(vals)
            if hvp != REFERENCE:
                p = paired_comparison(vals, {c: r["metrics"][key] for c, r in ref.items()})
                row[f"{name}_diff"] = p
                if name != "stability":
                    within &= p["n_pairs"] >= 2 and p["ci_low"] <= 0 <= p["ci_high"]
        row["within_noise"] = within if hvp != REFERENCE else None
        rows.append(row)
    return rows


def _diff(p: dict[str, float] | None) -> str:
    if not p:
        return "—"
    if p["n_pairs"] < 2:
        return f"{p['mean_diff']:+.4f} (n={p['n_pairs']})"
    return f"{p['mean_diff']:+.4f} [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}] p={p['p_ttest']:.2f}"


def markdown(rows: list[dict[str, Any]], root: str) -> str:
    lines = ["| `hvp` | passes / guided step | step / LoRA step | runs | accuracy | Δ acc vs exact [95% CI] | "
             "alignment | Δ align vs exact | stability | Δ stab vs exact | within noise |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "—" if math.isnan(r["ratio_lora"]) else f"{r['ratio_lora']:.2f}"
        noise = "reference" if r["within_noise"] is None else ("yes" if r["within_noise"] else "**no**")
        lines.append(f"| `{r['hvp']}` | {r['passes']} | {ratio} | {r['n']} | {r['accuracy']:.4f} | "
                     f"{_diff(r.get('accuracy_diff'))} | {r['alignment']:.4f} | {_diff(r.get('alignment_diff'))} | "
                     f"{r['stability']:.4f} | {_diff(r.get('stability_diff'))} | {noise} |")
    lines.append(f"\nPaired over (task, seed) against `{REFERENCE}` (the exact H·v); CI: bootstrap of the mean "
                 f"difference; p: paired t-test. Runs: `{root}`. Command: `python -m gradft.report.estimators`.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="results/estimators")
    ap.add_argument("--bench", default="reports/bench.json", help="step ratios from `make bench` (optional)")
    ap.add_argument("--out", default="outputs/reports/estimators.md")
    a = ap.parse_args(argv)
    runs = collect(a.root)
    if REFERENCE not in runs:
        raise SystemExit(f"no {REFERENCE} runs under {a.root}: the table needs the exact reference")
    text = markdown(table(runs, _bench_ratios(a.bench)), a.root)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Issue 27's measurement: the pre-fix guidance (version 1) against the fixed ``hessian`` reading, with and without
its trust region, and the ``update`` reading, on the same cells (ours at its Table 1 tuned point, seeds 100-102).

    python -m gradft.report.guidance --setting minilm [--out reports/guidance_fix_minilm.md]

Reads results.json only: version 1 from Table 1's committed cells (``results/<setting>/table1_<setting>/``), the rest
from ``results/<setting>/guidance_fix_<setting>/`` (``python -m gradft.experiments.grid guidance_fix_<setting>``). Per
task and
variant, mean ± std over seeds of: τ/‖g‖ (mean τ over mean task ‖g‖ of a run), the H·v ratio (mean ‖H·v‖/‖g‖ before
the trust region), the shift actually stepped on (‖guided − g‖/‖g‖), the share of guided steps where the trust region
bound, the final training loss (mean of the last 4 steps: one epoch of 32 shots in batches of 8) and accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

import yaml

from gradft import CONF_DIR

VARIANTS = {  # label -> (grid, method folder)
    "version 1 (pre-fix)": ("table1", "ours"),
    "hessian, fixed, κ = 1": ("guidance_fix", "ours"),
    "hessian, fixed, no trust region": ("guidance_fix", "ours_nocap"),
    "update": ("guidance_fix", "ours_update"),
    "lora (no guidance)": ("table1", "lora"),  # the baselines of the same cells, current: the reference rows
    "full (no guidance)": ("table1", "full"),
}


def _cell(r: dict[str, Any]) -> dict[str, float]:
    s = r.get("guidance_stats") or {}
    losses = r["history"]["train/loss"]
    tail = [x for x in losses[-4:] if x is not None and math.isfinite(x)]
    g = s.get("grad_norm_mean")
    out = {"tau_ratio": s["tau_mean"] / g if g and s.get("tau_mean") is not None else math.nan,
           "hv_ratio": s.get("hv_ratio_mean", math.nan),
           "shift_ratio": s.get("shift_ratio_mean", s.get("hv_ratio_mean", math.nan)),  # v1: nothing capped H·v
           "trust": s["trust_region_hits"] / max(s["guided_steps"], 1)  # the hessian reading's trust region only
           if "trust_region_hits" in s and s.get("mode") != "update" else math.nan,
           "loss": fmean(tail) if tail else math.nan, "accuracy": 100 * r["metrics"]["accuracy"]}
    return {k: (v if v is not None else math.nan) for k, v in out.items()}


def collect(results: Path, setting: str, tasks: list[str]) -> dict[tuple[str, str], list[dict[str, float]]]:
    cells: dict[tuple[str, str], list[dict[str, float]]] = {}
    for label, (grid, method) in VARIANTS.items():
        root = results / setting / f"{grid}_{setting}"
        for path in sorted(root.glob(f"*/{method}*/k32/s10[0-2]/results.json")):
            if path.parent.parent.parent.name.removesuffix("-lm") != method or path.parts[-5] not in tasks:
                continue
            cells.setdefault((path.parts[-5], label), []).append(_cell(json.loads(path.read_text())))
    return cells


def _fmt(xs: list[float], digits: str) -> str:
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return "—"
    m = fmean(xs)
    if digits == "g":
        return f"{m:.3g}" + (f" (max {max(xs):.2g})" if len(xs) > 1 and max(xs) > 10 * max(m, 1e-12) else "")
    return f"{m:{digits}}" + (f" ± {stdev(xs):{digits}}" if len(xs) > 1 else "")


def table(cells: dict[tuple[str, str], list[dict[str, float]]]) -> str:
    rows = ["| task | variant | n | τ/‖g‖ | ‖H·v‖/‖g‖ | shift stepped | trust region bound, % |"
            " final loss | accuracy % |",
            "|---|---|---|---|---|---|---|---|---|"]
    for task in sorted({t for t, _ in cells}):
        for label in VARIANTS:
            cs = cells.get((task, label), [])
            if not cs:
                continue
            col = lambda k, cs=cs: [c[k] for c in cs]  # noqa: E731
            rows.append(f"| {task} | {label} | {len(cs)} | {_fmt(col('tau_ratio'), 'g')} | "
                        f"{_fmt(col('hv_ratio'), 'g')} | {_fmt(col('shift_ratio'), 'g')} | "
                        f"{_fmt([100 * x for x in col('trust')], '.0f')} | {_fmt(col('loss'), '.3f')} | "
                        f"{_fmt(col('accuracy'), '.1f')} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setting", default="minilm", help="minilm | smollm2: results/<setting>/")
    ap.add_argument("--results", default="results", type=Path)
    ap.add_argument("--out", type=Path, help="also write the table here (markdown)")
    a = ap.parse_args(argv)
    spec = yaml.safe_load((CONF_DIR / "experiment" / f"guidance_fix_{a.setting}.yaml").read_text())
    cells = collect(a.results, a.setting, spec["grid"]["axes"]["task"])
    if not cells:
        raise SystemExit(f"no cells under {a.results}/{a.setting}: run "
                         f"python -m gradft.experiments.grid guidance_fix_{a.setting}")
    text = table(cells)
    print(text, end="")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

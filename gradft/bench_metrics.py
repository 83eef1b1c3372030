"""How many gradient-metric points a run needs: ``python -m gradft.bench_metrics [--root results/estimators]``.

Owns the sampling study behind ``metrics.every``. Each metric point is one extra forward + backward over the whole
backbone (``GradientMonitor``), so its cost grows with the number of points; its value is the two Table 1 metrics,
gradient stability 1/(1 + σ/μ) of ‖g_t‖ and directional alignment mean_t cos(g_t, d_task) (docs/metrics.md). From the
per-point traces that committed runs keep (``trace`` in results.json: ``grad/norm``, ``grad/cos_task``), this
recomputes both metrics from every sub-sample a coarser ``metrics.every`` would have measured (every offset of a
stride s over the run's points) and reports, per stride, the points per run, the RMS deviation from the all-points
value, and — the scale that matters — the std of each metric across the runs (seeds and tasks), which is the noise
Table 1's comparisons already carry. Writes ``reports/bench_metrics.json``; never trains.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from gradft.metrics import stability


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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="results/estimators", help="committed runs with metrics on")
    ap.add_argument("--out", default="reports/bench_metrics.json")
    a = ap.parse_args(argv)
    runs = traces(a.root)
    if not runs:
        raise SystemExit(f"no run under {a.root} has a gradient-metric trace (metrics.every > 0)")
    res = {**study(runs), "root": a.root, "command": "python -m gradft.bench_metrics " + " ".join(argv or [])}
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

"""Every report from the committed results: ``python -m gradft.report.every [results] [--out outputs/reports]``.

What ``make report`` runs. Owns the map from a grid folder to its report — ``results/<setting>/<kind>_<setting>`` ->
``<out>/<setting>`` (kind ``table1``) or ``<out>/<setting>/<kind>`` (``figure2``, ``figure3``, ``signal``,
``signal_figure2``), with ``conf/experiment/<grid>.yaml`` as its tuning block when the grid was written from studies and
every task read for the signal testbeds — and, last, one Figure 3 of every setting together (``<out>/figure3.*``).
``results/tuning/`` holds studies, not grids: never a report root. Builds each with ``gradft.report.build``; stops at
the first that fails (its error names the root), so a broken report is never taken for a rebuilt one.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from gradft.report.build import report

KINDS = ("table1", "figure2", "figure3", "signal")  # a grid folder's name starts with one; signal_figure2 is a signal*


@dataclass(frozen=True)
class Job:
    """One report: its results root, where it goes, its grid file (the tuning block) and whether every task counts."""
    root: Path
    out: Path
    tuning: Path | None
    all_tasks: bool


def plan(results: str | Path = "results", out: str | Path = "reports", experiments: str | Path = "conf/experiment",
         ) -> list[Job]:
    """The reports of every grid under ``results/<setting>/``, in KINDS order (as ``make report`` always built them)."""
    results, out, experiments = Path(results), Path(out), Path(experiments)
    jobs = []
    for kind in KINDS:
        for d in sorted(results.glob(f"*/{kind}_*")):
            setting, grid = d.parent.name, d.name
            if setting == "tuning" or not d.is_dir():  # the tuning tree's signal_<setting>/ is studies, not a grid
                continue
            name = grid.removesuffix(f"_{setting}")
            tuning = experiments / f"{grid}.yaml"
            jobs.append(Job(d, out / setting if name == "table1" else out / setting / name,
                            tuning if tuning.is_file() else None, name.startswith("signal")))
    return jobs


def figure3_roots(results: str | Path = "results") -> list[Path]:
    """Every setting's Figure 3 grid: read together for the one figure of all settings."""
    return [d for d in sorted(Path(results).glob("*/figure3_*")) if d.is_dir() and d.parent.name != "tuning"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gradft.report.every", description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="?", default="results", help="holds <setting>/<grid>/ (default results)")
    ap.add_argument("--out", default="outputs/reports", help="default outputs/reports; --out reports replaces the "
                                                             "committed reports/")
    ap.add_argument("--experiments", default="conf/experiment", help="where the grids' files are (tuning blocks)")
    a = ap.parse_args(argv)
    jobs = plan(a.results, a.out, a.experiments)
    if not jobs:
        print(f"no grid under {a.results}/<setting>/ ({', '.join(k + '_*' for k in KINDS)})", file=sys.stderr)
        return 1
    for j in jobs:
        print(f"== {j.root} -> {j.out}", flush=True)
        report(j.root, j.out, tuning=j.tuning, all_tasks=j.all_tasks)
    roots = figure3_roots(a.results)
    if roots:
        print(f"== every setting's Figure 3 -> {a.out}/figure3.{{png,md}}", flush=True)
        report(roots, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

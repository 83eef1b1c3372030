"""Experiment grids: ``python -m gradft.experiments.grid table1|figure2 [--workers N] [--dry-run] [axis=a,b]
[overrides...]``.

Owns: the grid specs (node ``grid`` of ``conf/experiment/<grid>.yaml``) expanded into cells (task × method × shots ×
seed), each a normal ``run()`` in ``<out>/<grid>/<task>/<method>/k<shots>/s<seed>/``; cells whose pool cannot supply
k shots (skipped, listed in ``skipped.json``); finished cells (a valid result of the plan's key and seeds,
``gradft.experiments.resultfile``: skipped, or copied from a sibling grid under the same ``--out`` that ran the same
cell); cells holding a finished result of another config (refused, or with ``--overwrite`` rerun with the old result
kept in ``<cell>/superseded/<key>/``); cells whose run diverged with the same config (error.json ``diverged``: kept
as an outcome, ``--retry-diverged`` runs them); one lock per cell (``gradft.experiments.locks``) so that workers and
concurrent grid processes never run a cell twice at once; the runs log ``runs.jsonl``; the exit code (non-zero if a
cell failed or could not write its result, 2 when it refused to run). Each cell's config, the (task, seed) cells of
a method and k, and the worker processes come from ``gradft.experiments.launch``, as a sweep's do.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gradft import CONF_DIR, stopping
from gradft import data as gdata
from gradft.config.guidance import guidance_fields, superseded
from gradft.experiments import resultfile
from gradft.experiments.eta import estimate
from gradft.experiments.launch import compose_run, run_workers, set_worker_threads, task_seeds
from gradft.experiments.locks import HOST, acquire, describe
from gradft.run import run
from gradft.tracking import atomic_write, config_key

log = logging.getLogger("gradft.experiments.grid")
AXES = ("task", "method", "shots", "seed")
OPTIONAL_AXES = ("head",)  # head: classifier | lm (absent: the composed config's)
POLL_S = 2.0
WAIT_LOG_S = 60.0


@dataclass(frozen=True)
class Cell:
    task: str
    method: str
    shots: int
    seed: int
    data_seed: int
    head: str | None = None

    @property
    def rel(self) -> str:
        method = f"{self.method}-lm" if self.head == "lm" else self.method
        return f"{self.task}/{method}/k{self.shots}/s{self.seed}"

    def overrides(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.__dict__.items() if v is not None]


@dataclass
class Plan:
    name: str
    root: Path                      # <out>/<grid>
    common: list[str]               # overrides applied to every cell, after the cell's own
    cells: list[Cell]               # feasible cells, in run order
    keys: dict[Cell, str]           # the config_key each cell's results.json must carry
    skipped: list[dict[str, Any]] = field(default_factory=list)   # infeasible cells and why
    per_method: dict[str, list[str]] = field(default_factory=dict)  # e.g. tuned values: before the common ones
    est_seconds: float | None = None
    retry_diverged: bool = False    # run again the cells whose run diverged with this very config (--retry-diverged)
    overwrite: bool = False         # replace finished results of another config (kept in <cell>/superseded/<key>/)
    break_locks: bool = False       # break the locks of other hosts' processes too (--break-locks)
    failures: dict[Cell, str] = field(default_factory=dict)  # cells that failed in this process, and why

    def cell_overrides(self, cell: Cell) -> list[str]:
        """The cell's axes, then its method's own overrides (``grid.per_method``), then the common ones."""
        return [*cell.overrides(), *self.per_method.get(cell.method, []), *self.common]

    def cell_dir(self, cell: Cell) -> Path:
        return self.root / cell.rel

    def is_done(self, cell: Cell, d: Path | None = None) -> bool:
        """A valid results.json in ``d`` (the cell's folder) with the plan's key and the cell's seeds, its config.yaml
        the config of that very result (``gradft.experiments.resultfile``); the key is recomputed from the
        config.yaml: results
        of an older gradft or another checkout count."""
        return resultfile.done(d or self.cell_dir(cell), self.keys[cell], cell.seed, cell.data_seed)

    def conflicts(self) -> list[Cell]:
        """Cells holding a finished, valid result of another config or seeds: replaced only with ``--overwrite``
        (guided results of an older guidance version are known to be obsolete: rerun, the old one kept)."""
        return [c for c in self.cells if self.conflict(c)]

    def conflict(self, cell: Cell) -> bool:
        v = resultfile.inspect(self.cell_dir(cell))
        return v.valid and not superseded(v.results) and not self.is_done(cell)

    def diverged(self, cell: Cell) -> bool:
        """This config and seeds diverged here before (error.json: a non-finite loss beyond trainer.max_skipped, with
        the same key): an outcome of the method, as reproducible as a result, not a crash to retry every round."""
        try:
            e = json.loads((self.cell_dir(cell) / "error.json").read_text())
            return bool(e.get("diverged")) and (e.get("config_key"), e.get("seed"), e.get("data_seed")) == (
                self.keys[cell], cell.seed, cell.data_seed)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False

    def settled(self, cell: Cell) -> bool:
        """Nothing left to run: done, or diverged with this config (unless retry_diverged)."""
        return self.is_done(cell) or (not self.retry_diverged and self.diverged(cell))

    def adopt(self, cell: Cell) -> bool:
        """Take a finished cell with the same key from a sibling grid under the same ``--out`` (Figure 2's 32-shot
        cells are Table 1's): the same computation, so its config.yaml and results.json are copied as they are."""
        for other in sorted(d for d in self.root.parent.iterdir() if d.is_dir() and d != self.root):
            if self.is_done(cell, other / cell.rel):
                try:
                    self.supersede(cell)  # whatever was there (not done), kept; then results.json last: it marks done
                    for name in ("config.yaml", "results.json"):
                        atomic_write(self.cell_dir(cell) / name, (other / cell.rel / name).read_text())
                    self.event("adopt", cell, source=str(other / cell.rel))
                except OSError as e:  # a full disk: not adopted (and not done); the cell is run instead
                    log.error("%s: could not adopt %s: %s", cell.rel, other / cell.rel, e)
                    return False
                return True
        return False

    def supersede(self, cell: Cell) -> None:
        """Move the cell's old result aside (``<cell>/superseded/<key>/``) before it is run or adopted: a new
        config.yaml never sits beside an old results.json."""
        v = resultfile.inspect(self.cell_dir(cell))
        if v.exists and not v.valid:
            log.warning("%s: %s; rerunning it", self.cell_dir(cell) / "results.json", v.reason)
        moved = resultfile.supersede(self.cell_dir(cell))
        if moved:
            log.warning("%s: its previous result moved to %s", cell.rel, moved)

    def failed_since(self, cell: Cell, t0: float) -> bool:
        try:
            return json.loads((self.cell_dir(cell) / "error.json").read_text())["time"] >= t0
        except (OSError, ValueError, KeyError):
            return False

    def event(self, kind: str, cell: Cell, **extra: Any) -> None:
        """One line appended to runs.jsonl (one O_APPEND write: concurrent processes' lines do not interleave)."""
        line = {"time": time.time(), "event": kind, "cell": cell.rel, "pid": os.getpid(), "host": HOST, **extra}
        with open(self.root / "runs.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")

    def eta(self, todo: list[Cell], workers: int) -> tuple[float | None, str]:
        """Seconds to run ``todo`` with ``workers`` processes, and what the estimate rests on
        (``gradft.experiments.eta``)."""
        return estimate(self, todo, workers)


def grid_spec(grid: str) -> dict[str, Any]:
    path = Path(grid) if grid.endswith((".yaml", ".yml")) else CONF_DIR / "experiment" / f"{grid}.yaml"
    if not path.exists():
        raise SystemExit(f"no grid {grid!r}: expected {path} (table1, figure2, smoke or a path)")
    spec = OmegaConf.to_container(OmegaConf.load(path).get("grid") or {}, resolve=True)
    if set(spec.get("axes", {})) - set(OPTIONAL_AXES) != set(AXES):
        raise SystemExit(f"{path}: grid.axes must list {', '.join(AXES)} (and may list {', '.join(OPTIONAL_AXES)})")
    return {"name": spec.get("name", path.stem), "data_seed": "seed", "overrides": [], **spec}


def plan(grid: str, extra: list[str] = (), out: str | Path = "outputs/grid") -> Plan:
    """Expand the grid: narrow axes with ``axis=a,b`` overrides, pass the rest to every cell, drop infeasible cells.
    Zero-shot (shots=0, head=lm) is deterministic and applies no method: one cell per task and head, always under
    the grid file's first method and seed, however the axes are narrowed (``method=lora,ours`` finds the committed
    ``full/k0`` cell, not a new ``lora/k0`` twin); the report shows it as the row ``zero-shot``."""
    spec = grid_spec(grid)
    axes = {"head": [None], **{k: list(v) for k, v in spec["axes"].items()}}
    common = ["save.model=false", "save.predictions=false", *(str(o) for o in spec["overrides"])]  # unless asked
    for o in extra:
        key = o.split("=", 1)[0]
        if key in AXES + OPTIONAL_AXES:
            axes[key] = [int(v) if key in ("shots", "seed") else v for v in o.split("=", 1)[1].split(",") if v]
        else:
            common.append(o)
    ds = spec["data_seed"]  # "seed": data_seed = seed, or one fixed int (launch.task_seeds)
    p = Plan(spec["name"], Path(out) / spec["name"], common, [], {}, est_seconds=spec.get("est_seconds_per_cell"),
             per_method={m: [str(o) for o in ov] for m, ov in (spec.get("per_method") or {}).items()})
    pools: dict[str, list] = {}
    zero = (spec["axes"]["method"][0], int(spec["axes"]["seed"][0]))  # where the zero-shot cell lives
    methods = axes["method"] + [zero[0]] * (0 in axes["shots"] and zero[0] not in axes["method"])
    for task, method, head in product(axes["task"], methods, axes["head"]):
        base = compose_run([f"task={task}", f"method={method}", *([f"head={head}"] if head else []),
                            *p.per_method.get(method, []), *common, "paths.output_dir=."])
        if task not in pools:
            pools[task] = gdata.load_task(base.task, base.data).train_pool
        # zero-shot: the same model and numbers for every method and seed, so one cell; the rest as the axes say
        runs = [(0, r) for r in task_seeds([task], [zero[1]], ds)] if 0 in axes["shots"] and method == zero[0] else []
        if method in axes["method"]:
            runs += [(k, r) for k in axes["shots"] if k for r in task_seeds([task], axes["seed"], ds)]
        for shots, (_, seed, data_seed) in runs:
            cell = Cell(task, method, int(shots), seed, data_seed, head)
            try:
                if shots == 0 and base.head != "lm":
                    raise gdata.DataError("shots=0 (zero-shot) needs head=lm: a new classifier head is untrained")
                if shots:
                    gdata.sample_shots(pools[task], cell.shots, cell.data_seed, base.data.balance)
            except gdata.DataError as e:
                p.skipped.append({**cell.__dict__, "reason": str(e)})
                continue
            p.cells.append(cell)  # shots is a plain value (= the override); the key ignores seed and data_seed
            p.keys[cell] = config_key(OmegaConf.merge(base, {"shots": cell.shots}))  # head is in base
    # run order: seed by seed (stable: task × method × shots within a seed), so a grid stopped partway has every
    # task, method and k at its first seeds — a partial table compares methods on the same cells
    rank = {s: i for i, s in enumerate(axes["seed"])}
    p.cells.sort(key=lambda c: rank.get(c.seed, -1))  # the zero-shot cell (the first seed, or any) first
    return p


def run_cell(p: Plan, cell: Cell) -> str | None:
    """Run one cell (its old result moved aside first); None when it finished, else why not (one line)."""
    d = p.cell_dir(cell)
    if p.conflict(cell) and not p.overwrite:  # finished since the plan was checked, by another config
        log.error("%s holds a finished result of another config: not overwritten (--overwrite replaces it)", d)
        return "a finished result of another config (--overwrite)"
    p.supersede(cell)
    p.event("start", cell)
    t = time.perf_counter()
    cfg = None
    try:
        cfg = compose_run([*p.cell_overrides(cell), f"paths.output_dir={d}"])
        res = run(cfg, d)
    except Exception as e:  # noqa: BLE001 — a failing cell is logged and the grid goes on
        log.exception("cell %s failed", cell.rel)
        why = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        try:  # a full disk may refuse this too: the grid still counts the cell failed and says why
            atomic_write(d / "error.json", json.dumps({
                "time": time.time(), "error": repr(e), "pid": os.getpid(), "host": HOST,
                "diverged": type(e).__name__ == "NonFiniteError", "seed": cell.seed, "data_seed": cell.data_seed,
                "config_key": config_key(cfg) if cfg is not None else None,
                **(guidance_fields(cfg) if cfg is not None else {})}))
            p.event("fail", cell, error=repr(e)[:500])
        except OSError as e2:
            log.error("cell %s: could not record its failure either (%s)", cell.rel, e2)
        return why
    (d / "error.json").unlink(missing_ok=True)
    p.event("done", cell, seconds=round(time.perf_counter() - t, 2), accuracy=res["metrics"].get("accuracy"))
    return None


def _hours(seconds: float | None) -> str:
    return "unknown" if seconds is None else f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def log_progress(p: Plan, workers: int) -> None:
    """``grid <name>: 12/54 cells done, 42 to run, ETA ~1.3 h`` (every process sharing the tree counts)."""
    todo = [c for c in p.cells if not p.settled(c)]
    eta, basis = p.eta(todo, workers)
    log.info("grid %s: %d/%d cells done, %d to run, ETA ~%s with %d worker(s) (%s)", p.name,
             len(p.cells) - len(todo), len(p.cells), len(todo), _hours(eta), workers, basis)


def work(p: Plan, t0: float, worker: int = 0, n_workers: int = 1) -> None:
    """Run every cell that is not done, not failed in this round, and not locked by a live process; cells locked by
    others are retried until they are done (or their holder dies and the lock goes stale)."""
    if n_workers > 1:  # a spawned worker process
        logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [grid w{worker}] %(levelname)s %(message)s")
        set_worker_threads(n_workers)
    k = len(p.cells) * worker // n_workers
    pending = p.cells[k:] + p.cells[:k]  # workers start at different places: fewer lock collisions
    said: dict[Cell, float] = {}  # cell -> when its wait was last logged
    while pending:
        waiting = []
        for cell in pending:
            stopping.check()  # never start a cell after a SIGTERM (its exception may have been swallowed)
            if p.settled(cell) or p.failed_since(cell, t0) or cell in p.failures:
                continue
            lock = p.cell_dir(cell) / ".lock"
            if not acquire(lock, break_foreign=p.break_locks):
                waiting.append(cell)
                if time.time() - said.get(cell, 0.0) >= WAIT_LOG_S:  # say what it waits for, then once a minute
                    log.info("grid %s: waiting for %s, locked by %s", p.name, cell.rel, describe(lock))
                    said[cell] = time.time()
                continue
            try:
                if not (p.is_done(cell) or p.failed_since(cell, t0)):  # finished while we were taking the lock
                    why = run_cell(p, cell)
                    if why:
                        p.failures[cell] = why
                    log_progress(p, n_workers)
            finally:
                lock.unlink(missing_ok=True)
        pending = waiting
        if pending:
            time.sleep(POLL_S)


def execute(p: Plan, workers: int = 1) -> int:
    """Run the plan with ``workers`` processes (in this process when 1); 0 when every feasible cell is done."""
    t0 = time.time()
    clash = p.conflicts()
    if clash and not p.overwrite:
        log.error("grid %s: %d finished cell(s) under %s hold results of another config: %s; nothing run. --overwrite "
                  "runs them again (each old result kept in <cell>/%s/<key>/), or choose another --out", p.name,
                  len(clash), p.root, ", ".join(c.rel for c in clash), resultfile.SUPERSEDED)
        return 2
    p.root.mkdir(parents=True, exist_ok=True)
    atomic_write(p.root / "skipped.json", json.dumps(p.skipped, indent=1))
    adopted = sum(p.adopt(c) for c in p.cells if not p.is_done(c))
    if adopted:
        log.info("grid %s: %d cells adopted from sibling grids under %s (same config key, seed and data seed)",
                 p.name, adopted, p.root.parent)
    diverged = [c.rel for c in p.cells if not p.is_done(c) and p.settled(c)]
    if diverged:
        log.info("grid %s: %d cell(s) diverged with this config before, kept as such (--retry-diverged runs them): %s",
                 p.name, len(diverged), ", ".join(diverged))
    todo = [c for c in p.cells if not p.settled(c)]
    eta, basis = p.eta(todo, workers)
    log.info("grid %s: %d cells, %d done, %d to run (ETA ~%s with %d worker(s), %s), %d skipped (skipped.json says "
             "why) -> %s", p.name, len(p.cells), len(p.cells) - len(todo), len(todo), _hours(eta), workers, basis,
             len(p.skipped), p.root)
    if todo and workers <= 1:
        work(p, t0)
    elif todo:  # a worker that dies leaves its cell's lock stale: the others (or a rerun) take it over
        run_workers(work, [(p, t0, i, workers) for i in range(workers)])
    left = [c.rel for c in p.cells if not (p.is_done(c) or p.diverged(c))]  # diverged (again, if retried): an outcome
    failed = [c.rel + (f" ({p.failures[c]})" if c in p.failures else "") for c in p.cells
              if c.rel in left and (c in p.failures or p.failed_since(c, t0))]
    diverged = [c.rel for c in p.cells if not p.is_done(c) and p.diverged(c)]
    log.info("grid %s: %d/%d cells done (%d of them diverged: no result, see <cell>/error.json); failed: %s; "
             "not run: %d", p.name, len(p.cells) - len(left), len(p.cells), len(diverged),
             ", ".join(failed) or "none", len(left) - len(failed))
    return 1 if left else 0


def dry_run(p: Plan, workers: int) -> None:
    done, clash = [c for c in p.cells if p.is_done(c)], p.conflicts()
    for c in p.cells:  # OTHER: a finished result of another config (--overwrite replaces it, keeping a copy)
        state = ("done" if c in done else "OTHER" if c in clash else "DIVERGED" if p.settled(c)
                 else "LOCKED" if (p.cell_dir(c) / ".lock").exists() else "todo")
        print(f"  {state:6s} {c.rel}  data_seed={c.data_seed}")
    for s in p.skipped:
        print(f"  skip   {s['task']}/{s['method']}/k{s['shots']}/s{s['seed']}: {s['reason']}")
    todo = [c for c in p.cells if not p.settled(c)]
    eta, basis = p.eta(todo, workers)
    print(f"grid {p.name}: {len(p.cells)} cells ({len(done)} done, {len(todo)} to run, ETA ~{_hours(eta)} with "
          f"{workers} worker(s), {basis}), {len(p.skipped)} skipped; "
          f"every cell: {' '.join(p.common) or '(no extra overrides)'} -> {p.root}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gradft.experiments.grid", description=__doc__.split("\n\n")[0])
    ap.add_argument("grid", help="table1 | figure2 | smoke | <path to a grid yaml>")
    ap.add_argument("overrides", nargs="*", help="axis=a,b narrows an axis; anything else applies to every cell")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default="outputs/grid", help="output root (default outputs/grid)")
    ap.add_argument("--dry-run", action="store_true", help="list the cells and what is done; run nothing")
    ap.add_argument("--retry-diverged", action="store_true",
                    help="run again the cells whose run diverged with the same config (kept as diverged otherwise)")
    ap.add_argument("--overwrite", action="store_true", help="run again cells holding a finished result of another "
                    "config (refused otherwise); the old result is kept in <cell>/superseded/<key>/")
    ap.add_argument("--break-locks", action="store_true", help="also break cell locks written on other hosts (only "
                    "when no grid runs there any more: such locks are never broken otherwise)")
    args = ap.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [grid] %(levelname)s %(message)s")
    p = plan(args.grid, args.overrides, args.out)
    p.retry_diverged, p.overwrite, p.break_locks = args.retry_diverged, args.overwrite, args.break_locks
    if args.dry_run:
        dry_run(p, args.workers)
        return 0
    return execute(p, args.workers)


if __name__ == "__main__":
    sys.exit(main())

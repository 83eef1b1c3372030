"""Whether a run folder holds a finished, valid result: the one predicate the grid (done, adoption, overwrite), and
the report (which results it averages) share, and the one place that moves a result aside instead of replacing it.

A folder is a *valid result* when its ``results.json`` is a JSON object of the expected shape (``seed``,
``data_seed``, ``shots`` ints; ``config_key`` a string; ``metrics`` a dict; an accuracy, wherever one is given, a
finite number in [0, 1]; ``history`` and ``trace`` dicts) and its ``config.yaml`` is the config of that very run:
a mapping whose seeds are the result's and whose ``config_key`` is the one ``results.json`` carries. Results written
before ``env`` was recorded (2026-12-04) carry a key of an older ``config_key`` definition; for them the pair is
checked by its seeds alone (``config_key`` is not changed: committed results stay done).

Writers never leave a new ``config.yaml`` beside an old ``results.json``: ``tracking.write_results`` removes the old
``results.json`` first and writes it last, and a grid moves an existing result aside (``supersede``) before it runs
or adopts a cell, so a crash or a full disk between the writes leaves a folder that is not done.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gradft.tracking import config_key

SUPERSEDED = "superseded"  # <cell>/superseded/<key>/: results moved aside by --overwrite (or invalid ones)
INTS = ("seed", "data_seed", "shots")
ACCURACY_SPLITS = ("metrics", "select_metrics")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def problems(r: Any) -> list[str]:
    """What is wrong with a parsed results.json (empty: nothing)."""
    if not isinstance(r, dict):
        return [f"not a JSON object but {type(r).__name__}"]
    out = [f"{k} is {r.get(k)!r}, not an int" for k in INTS if not _is_int(r.get(k))]
    if not isinstance(r.get("config_key"), str):
        out.append("no config_key")
    for k in ("method", "task", "model"):
        if not isinstance(r.get(k), str):
            out.append(f"{k} is {r.get(k)!r}, not a string")
    if not isinstance(r.get("metrics"), dict):
        out.append(f"metrics is {type(r.get('metrics')).__name__}, not a dict")
    for k in ("history", "trace", "select_metrics", "env", "data", "guidance_stats"):
        if k in r and not isinstance(r[k], dict):
            out.append(f"{k} is {type(r[k]).__name__}, not a dict")
    if out:
        return out
    accs = [(s, r[s]["accuracy"]) for s in ACCURACY_SPLITS if isinstance(r.get(s), dict) and "accuracy" in r[s]]
    if not accs:
        out.append("no accuracy (metrics.accuracy or select_metrics.accuracy)")
    for split, a in accs:
        if not (_is_number(a) and math.isfinite(a) and 0.0 <= a <= 1.0):
            out.append(f"{split}.accuracy is {a!r}, not a number in [0, 1]")
    for k, v in r["metrics"].items():
        if v is not None and not _is_number(v):
            out.append(f"metrics.{k} is {v!r}, not a number")
    return out


@dataclass(frozen=True)
class Verdict:
    """What a run folder holds: ``results`` and the pair's ``key`` when valid, else ``reason`` (why not)."""

    results: dict[str, Any] | None
    key: str | None
    reason: str | None

    @property
    def valid(self) -> bool:
        return self.reason is None

    @property
    def exists(self) -> bool:
        """A results.json is there (valid or not): something a rerun would replace."""
        return self.reason != MISSING


MISSING = "no results.json"


def _bad(reason: str) -> Verdict:
    return Verdict(None, None, reason)


def inspect(d: str | Path) -> Verdict:
    """The folder's result, checked: never raises for any content of the folder."""
    d = Path(d)
    try:
        text = (d / "results.json").read_text()
    except FileNotFoundError:
        return _bad(MISSING)
    except OSError as e:
        return _bad(f"results.json unreadable: {e}")
    try:
        r = json.loads(text)
    except ValueError as e:
        return _bad(f"results.json is not JSON ({e})")
    wrong = problems(r)
    if wrong:
        return _bad("results.json: " + "; ".join(wrong))
    try:
        cfg = yaml.safe_load((d / "config.yaml").read_text())
    except FileNotFoundError:
        return _bad("no config.yaml beside results.json")
    except (OSError, yaml.YAMLError) as e:
        return _bad(f"config.yaml unreadable: {str(e).splitlines()[0]}")
    if not isinstance(cfg, dict) or not cfg:
        return _bad("config.yaml is empty or not a mapping")
    if (cfg.get("seed"), cfg.get("data_seed")) != (r["seed"], r["data_seed"]):
        return _bad(f"config.yaml's seeds ({cfg.get('seed')}, {cfg.get('data_seed')}) are not results.json's "
                    f"({r['seed']}, {r['data_seed']})")
    try:
        key = config_key(cfg)
    except Exception as e:  # noqa: BLE001 — any garbage in a hand-edited config.yaml: not a result
        return _bad(f"config.yaml has no computable key ({type(e).__name__}: {e})")
    if "env" in r and r["config_key"] != key:  # today's key (results without env: an older key definition)
        return _bad(f"results.json carries config_key {r['config_key']} but its config.yaml has {key} "
                    "(a mismatched pair: an interrupted write?)")
    return Verdict(r, key, None)


def done(d: str | Path, key: str, seed: int, data_seed: int) -> bool:
    """A valid result of exactly this key and seeds: a finished cell."""
    v = inspect(d)
    return v.valid and (v.key, v.results["seed"], v.results["data_seed"]) == (key, seed, data_seed)


def supersede(d: str | Path, label: str | None = None) -> Path | None:
    """Move the folder's results.json and config.yaml (nothing else) into ``<d>/superseded/<label>/`` (label: the
    result's key, or ``invalid-<time>``); the new folder, or None when there was no results.json."""
    d = Path(d)
    if not (d / "results.json").exists():
        (d / "config.yaml").unlink(missing_ok=True)  # a config without a result: a run that did not finish
        return None
    if label is None:
        v = inspect(d)
        label = v.key if v.valid else f"invalid-{time.strftime('%Y%m%d-%H%M%S')}"
    dest = d / SUPERSEDED / label
    n = 1
    while dest.exists():
        n += 1
        dest = d / SUPERSEDED / f"{label}-{n}"
    dest.mkdir(parents=True)
    if (d / "config.yaml").exists():
        shutil.move(str(d / "config.yaml"), dest / "config.yaml")
    shutil.move(str(d / "results.json"), dest / "results.json")  # last: until here the folder was as it was
    return dest


def result_files(root: str | Path) -> Iterator[Path]:
    """Every results.json under ``root`` except those moved aside (``superseded/``), in sorted order."""
    for path in sorted(Path(root).rglob("results.json")):
        if SUPERSEDED not in path.relative_to(root).parts[:-1]:
            yield path

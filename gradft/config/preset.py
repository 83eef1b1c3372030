"""Tuned settings in a single run: ``python -m gradft +preset=table1_minilm method=ours task=cb``.

Owns `expand_preset`, the one step ``python -m gradft`` takes before Hydra composes: ``+preset=<name>`` (or
``preset=<name>``) is replaced, in place, by the overrides a grid file gives its cells (``experiment/<name>.yaml``
with a ``grid`` node, as ``gradft.experiments.tuned`` writes it): ``grid.per_method[<method>]``, then
``grid.overrides``, then
``data_seed=${seed}`` when the grid draws shots by seed. So a run is the grid's cell for the same task, shots and
seed (the same ``config_key``), and anything typed after the preset wins. The method is the command line's
``method=``, else conf/config.yaml's default. Not a config group on purpose: the values depend on the method
chosen, which Hydra's defaults list cannot select on. Grid files are looked up in ``--config-dir`` / ``-cd``,
``hydra.searchpath=[file://…]`` and the repo's conf/. Torch-free.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf

from gradft import CONF_DIR

PRESET = re.compile(r"^\+?preset=(.*)$")


def _conf_dirs(argv: list[str]) -> list[Path]:
    """The user's config dirs named on the command line, then the repo's conf/."""
    dirs = []
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            dirs.append(Path(argv[i + 1]).expanduser())
        elif arg.startswith("--config-dir="):
            dirs.append(Path(arg.split("=", 1)[1]).expanduser())
        elif arg.startswith("hydra.searchpath="):
            dirs += [Path(p.strip().strip("'\"").removeprefix("file://"))
                     for p in arg.split("=", 1)[1].strip("[]").split(",") if p.strip().strip("'\"").startswith("file://")]
    return [*dirs, CONF_DIR]


def find_preset(name: str, argv: list[str]) -> Path:
    """``experiment/<name>.yaml`` on the command line's config dirs (or a path to a yaml file)."""
    if name.endswith((".yaml", ".yml")):
        if not Path(name).expanduser().is_file():
            raise ValueError(f"preset={name}: no such file")
        return Path(name).expanduser()
    tried = [d / "experiment" / f"{name}.yaml" for d in _conf_dirs(argv)]
    for path in tried:
        if path.is_file():
            return path
    found = sorted({p.stem for d in _conf_dirs(argv) for p in (d / "experiment").glob("*.yaml")
                    if "grid" in (OmegaConf.load(p) or {})})
    raise ValueError(f"preset={name}: no {', '.join(map(str, tried))}; grid files: {', '.join(found)}")


def _method(argv: list[str]) -> str:
    chosen = [a.split("=", 1)[1] for a in argv if a.startswith(("method=", "+method=", "++method="))]
    if chosen:
        return chosen[-1]
    defaults = OmegaConf.load(CONF_DIR / "config.yaml").defaults
    return next(d["method"] for d in defaults if OmegaConf.is_dict(d) and "method" in d)


def preset_overrides(path: Path, method: str) -> list[str]:
    """What the grid file gives its cells of ``method``: per-method values, common overrides, the data seed."""
    grid = (OmegaConf.load(path) or {}).get("grid")
    if grid is None:
        raise ValueError(f"preset={path.stem}: {path} has no `grid` node "
                         "(a grid file, as gradft.experiments.tuned writes it); "
                         f"a sweep's best file is run as experiment={path.stem}")
    if "," in method:
        raise ValueError(f"+preset with method={method}: one method per run "
                         f"(python -m gradft.experiments.grid {path.stem} "
                         f"method={method} runs several)")
    per_method = OmegaConf.to_container(grid.get("per_method") or {}, resolve=True)
    if per_method and method not in per_method:
        raise ValueError(f"preset={path.stem} has no tuned values for method={method}; it has {', '.join(per_method)}")
    out = [*map(str, per_method.get(method, [])), *map(str, grid.get("overrides") or [])]
    data_seed = grid.get("data_seed", "seed")
    return [*out, "data_seed=${seed}" if data_seed == "seed" else f"data_seed={data_seed}"]


def _is_override(arg: str) -> bool:
    return "=" in arg and not arg.startswith("-")


def expand_preset(argv: list[str]) -> tuple[list[str], str | None]:
    """``argv`` with its ``+preset=<name>`` replaced by the grid file's overrides (placed where the run of overrides
    that holds it starts, so every override typed on the command line comes after them and wins), and a one-line
    note of what was applied (None without a preset)."""
    at = [i for i, a in enumerate(argv) if PRESET.match(a)]
    if not at:
        return argv, None
    if len(at) > 1:
        raise ValueError("one +preset per run")
    i = at[0]
    name = PRESET.match(argv[i]).group(1)
    path = find_preset(name, argv)
    rest = argv[:i] + argv[i + 1:]
    method = _method(rest)
    added = preset_overrides(path, method)
    start = i
    while start > 0 and _is_override(argv[start - 1]):
        start -= 1
    return rest[:start] + added + rest[start:], f"preset {name} ({path}), method={method}: {' '.join(added)}"

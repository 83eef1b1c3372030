"""gradft as a package: the wheel carries the Hydra configs and runs from any folder, outside the repo; the console
scripts exist; pyproject states compatible ranges and constraints.txt the exact tested set inside them.

The end-to-end check builds the wheel from a copy of the sources, installs it with ``pip install --no-deps --target``
into a temporary folder and runs its scripts with that folder on PYTHONPATH (this venv's libraries) from another
folder, where the checkout's gradft is not importable."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from conftest import make_cfg
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = {"gradft": "gradft", "gradft-grid": "gradft.experiments.grid", "gradft-sweep": "gradft.experiments.sweep",
           "gradft-tuned": "gradft.experiments.tuned", "gradft-report": "gradft.report.build",
           "gradft-compute": "gradft.experiments.compute",
           "gradft-data": "gradft.data"}


def _pins() -> dict[str, str]:
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "constraints.txt").read_text().splitlines()]
    return {canonicalize_name(ln.split("==")[0]): ln.split("==")[1] for ln in lines if ln}


def test_pyproject_packages_every_module_and_every_config_folder():
    """The package list is explicit (conf/ is mapped into the wheel as gradft.conf): it must name every package
    under gradft/ and every folder of conf/, whose yaml files it ships."""
    st = PYPROJECT["tool"]["setuptools"]
    code = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "gradft").rglob("__init__.py")}
    conf = {".".join(("gradft", "conf", *p.relative_to(ROOT / "conf").parts))
            for p in [ROOT / "conf", *(ROOT / "conf").rglob("*")] if p.is_dir() and p.name != "__pycache__"}
    assert set(st["packages"]) == code | conf
    assert st["package-dir"] == {"gradft.conf": "conf"}
    with_yaml = {".".join(("gradft", "conf", *p.parent.relative_to(ROOT / "conf").parts))
                 for p in (ROOT / "conf").rglob("*.yaml")}
    assert {k for k, v in st["package-data"].items() if "*.yaml" in v} == with_yaml


def test_console_scripts_name_the_module_entry_points():
    scripts = PYPROJECT["project"]["scripts"]
    assert set(scripts) == set(SCRIPTS)
    for name, target in scripts.items():
        module, func = target.split(":")
        assert module.removesuffix(".__main__") == SCRIPTS[name]
        path = ROOT / (module.replace(".", "/") + ".py")
        defined = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}
        assert func in defined, f"{name}: {target} is not defined"


def test_runtime_dependencies_are_ranges_and_constraints_pin_the_tested_set_inside_them():
    """Installing gradft must not replace an environment's libraries (no ==), and `make install` must reproduce the
    tested set: constraints.txt pins every requirement (torch at the local CPU wheel's 2.13.0) within its range."""
    reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    reqs += [Requirement(r) for extra in PYPROJECT["project"]["optional-dependencies"].values() for r in extra]
    pins = _pins()
    assert pins["torch"] == "2.13.0"
    for req in reqs:
        assert all(s.operator not in ("==", "===", "~=") for s in req.specifier), f"{req} is pinned"
        assert any(s.operator == ">=" for s in req.specifier), f"{req} has no lower bound"
        assert canonicalize_name(req.name) in pins, f"{req.name} is not in constraints.txt"
        assert req.specifier.contains(pins[canonicalize_name(req.name)]), f"constraints.txt {req.name} outside {req}"
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources, installed into <tmp>/site (no dependencies: this venv's)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "best_*.yaml")
    for name in ("gradft", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    isolation = [] if importlib.util.find_spec("setuptools") else ["--use-pep517"]  # 3.12+ venvs lack setuptools
    no_isolation = ["--no-build-isolation"] if not isolation else []
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *no_isolation, "-q", "-w",
                            str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp / "dist").glob("gradft-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "gradft/conf/config.yaml" in names and "gradft/conf/experiment/smoke.yaml" in names
    assert "gradft/conf/model/tiny_bert.yaml" in names and not any(n.startswith("conf/") for n in names)
    site = tmp / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                           str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr
    return site


def _in(site: Path, cwd: Path, *cmd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A console script of the installed wheel, run by this venv's python from `cwd` (not the repo)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GRADFT_") and k != "PYTHONPATH"}
    full = {**base, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled", **(env or {})}
    script = site / "bin" / cmd[0]
    return subprocess.run([sys.executable, str(script), *cmd[1:]], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=600)


TASK_YAML = """\
name: words
format: pair
root: {root}
fields: [sentence]
labels: [neg, pos]
train: {{path: words.csv}}
split: {{seed: 0, select: 4, eval: 8, stratify: true}}
"""
TINY = ["model=tiny_bert", "trainer.steps=1", "eval.max_examples=8", "metrics.every=1", "logger.mode=disabled",
        "trainer.threads=1"]


@pytest.mark.slow(minutes=1)
def test_the_wheel_installed_outside_the_repo_runs_the_cli_from_any_folder(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # the installed gradft, with the configs inside it; a data root here is ${project_root:} = the cwd
    where = _in(installed, elsewhere, "gradft-compute", "--help")  # a console script runs at all
    assert where.returncode == 0, where.stderr
    probe = subprocess.run([sys.executable, "-c", "import gradft; print(gradft.__file__); print(gradft.CONF_DIR);"
                            "print(gradft.project_root())"], cwd=elsewhere, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(installed)}, timeout=120)
    file, conf, root = probe.stdout.split()
    assert Path(file).is_relative_to(installed) and Path(conf) == installed / "gradft" / "conf"
    assert Path(root) == elsewhere

    # one run of a user's task from their own --config-dir: results.json in the run dir
    (elsewhere / "my_conf" / "task").mkdir(parents=True)
    (elsewhere / "words.csv").write_text("sentence,label\n" + "".join(
        f"this is {w} number {i},{lab}\n" for i in range(10) for w, lab in (("good", "pos"), ("bad", "neg"))))
    (elsewhere / "my_conf" / "task" / "words.yaml").write_text(TASK_YAML.format(root=elsewhere))
    out = elsewhere / "run"
    res = _in(installed, elsewhere, "gradft", "--config-dir", "my_conf", "task=words", "shots=8", *TINY,
              f"hydra.run.dir={out}")
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "words" and 0 <= results["metrics"]["accuracy"] <= 1

    # the shipped tasks: data roots from the environment; a grid from the packaged conf/experiment
    data = make_cfg().data
    roots = {"GRADFT_SUPERGLUE": str(data.superglue_root), "GRADFT_FEWGLUE": str(data.fewglue_root)}
    if Path(roots["GRADFT_SUPERGLUE"]).is_dir():
        grid = _in(installed, elsewhere, "gradft-grid", "smoke", "task=cb", "method=prompt", "--out", "grid",
                   env=roots)
        assert grid.returncode == 0, grid.stderr[-3000:]
        (cell,) = (elsewhere / "grid").rglob("results.json")
        assert json.loads(cell.read_text())["task"] == "cb"

    # without them, from a folder with no ../shared/data: the error names the variable and the config key
    miss = _in(installed, elsewhere, "gradft-data", "task=cb")
    assert miss.returncode == 2
    assert re.search(r"set GRADFT_SUPERGLUE=\S+ or pass data\.superglue_root=", miss.stderr), miss.stderr[-2000:]

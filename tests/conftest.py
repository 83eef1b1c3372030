"""Shared fixtures: offline environment, composed configs, tiny models built from config (no network)."""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["WANDB_MODE"] = os.environ.get("GRADFT_TEST_WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
# one torch/OpenMP thread per test process (and the CLI processes it starts): tiny models gain nothing from a second,
# and on a busy 2-core machine two threads ran a tiny-BERT run 30x slower (docs/sweeps.md)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

import gradft  # noqa: E402,F401  (registers the ${project_root:} resolver)

CONF = str(Path(__file__).resolve().parent.parent / "conf")

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def make_cfg(*overrides: str, out: Path | None = None):
    """Compose ``conf/config.yaml`` with command-line style overrides, exactly as ``python -m gradft`` does."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        extra = [f"paths.output_dir={out}"] if out is not None else ["paths.output_dir=/tmp/gradft-test"]
        return compose("config", overrides=["logger.mode=disabled", *extra, *overrides])


@pytest.fixture
def cfg_factory(tmp_path):
    def factory(*overrides: str):
        return make_cfg(*overrides, out=tmp_path / "run")

    return factory


ROOT = Path(__file__).resolve().parent.parent


def spawn(module: str, *args: str, stdout: int = subprocess.DEVNULL) -> subprocess.Popen:
    """``python -m <module> <args>`` as a child process of the repo, offline, W&B disabled."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=env, stdout=stdout,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="session")
def smoke_grid(tmp_path_factory) -> Path:
    """The smoke grid (cb, rte × prompt, ours × seed 0 on a tiny BERT), run once per test process: test_grid.py and
    test_report.py only read it (or work on copies)."""
    from gradft.experiments import grid

    out = tmp_path_factory.mktemp("smoke-grid")
    assert grid.main(["smoke", "--out", str(out)]) == 0
    return out


# Expensive fixtures built once per test process (module or session scope) -> the xdist group of every test using
# them: with ``pytest -n N --dist loadgroup`` (make test) those tests run on one worker, which builds the fixture once.
SHARED_FIXTURES = {"smoke_grid": "smoke_grid", "finished": "smoke_grid", "tree": "smoke_grid", "reported": "smoke_grid",
                   "resumed": "sweep_resumed", "studies": "tuned_studies", "report": "bench_report",
                   "pg_url": "postgres"}


def _start_order(item) -> tuple[int, float]:
    """Slow tests first, the longest (``@pytest.mark.slow(minutes=…)``, 1 if not given) first among them: with xdist
    workers the end-to-end checks then start at once, not last, while the short tests fill the other workers."""
    slow = item.get_closest_marker("slow")
    return (0, -float(slow.kwargs.get("minutes", 1))) if slow is not None else (1, 0.0)


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
    items.sort(key=_start_order)  # stable: each module's other tests keep their order (module fixtures built once)
    for item in items:  # before every other implementation: xdist's reads the groups
        group = next((SHARED_FIXTURES[f] for f in getattr(item, "fixturenames", ()) if f in SHARED_FIXTURES), None)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
    result = yield
    # pytest-xdist 3.8 groups a test by appending "@group" to ``item._nodeid``; pytest 9.2 reads its node ids from
    # ``item._id``, so without this the groups never reach the scheduler (and every worker built every fixture)
    from _pytest.nodeid import coerce_node_id

    for item in items:
        grouped = getattr(item, "_nodeid", None)
        if isinstance(grouped, str) and grouped != item.nodeid and grouped.startswith(item.nodeid + "@"):
            item._id = coerce_node_id(grouped)
    return result


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Configs with trainer.threads set it process-wide in run(): give every later test its threads back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)

"""A single ``python -m gradft`` run that cannot go on says so in one line, naming the key or the file (issue 31,
item 5): a seed outside torch's range, a template with more than plain field names, a CUDA device on a machine
without one, a full disk at the results write, a read-only run or W&B folder. The disk errors are raised by a
patched write (they cannot be produced without root); everything else is the real CLI."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import ROOT, make_cfg

from gradft.config.schema import validate

QUICK = ["model=tiny_bert", "trainer.steps=1", "eval.max_examples=8", "metrics.every=1", "logger.mode=disabled"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}


def cli(*args: str, patch: str = "") -> subprocess.CompletedProcess:
    """``python -m gradft <args>``, after ``patch`` (Python source) has run in the same process."""
    code = patch + "\nimport runpy\nrunpy.run_module('gradft', run_name='__main__', alter_sys=True)\n"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=600)


def one_line(proc: subprocess.CompletedProcess) -> str:
    """The CLI's stderr must be exactly one ``gradft: error:`` line (log lines go to stdout), no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradft: error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


@pytest.mark.parametrize("key", ["seed", "data_seed"])
def test_a_seed_beyond_torchs_range_is_refused_naming_its_key(key):
    with pytest.raises(ValueError, match=f"^{key}=100000000000000000000: must be an integer"):
        validate(make_cfg(*QUICK, f"{key}=100000000000000000000"))


@pytest.mark.parametrize("template", ["{premise.__class__} {hypothesis}", "{premise:>200000000} {hypothesis}",
                                      "{premise!r} {hypothesis}", "{premise[0]} {hypothesis}", "{} {hypothesis}"])
def test_a_template_with_more_than_plain_field_names_is_refused_at_the_config_check(template):
    with pytest.raises(ValueError, match="is not a plain field name") as e:
        validate(make_cfg(*QUICK, "model=tiny_llama", "head=lm", "task=rte", f"task.prompt.template='{template}'"))
    assert "\n" not in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_trainer_device_cuda_without_cuda_is_one_line_naming_the_key(tmp_path):
    proc = cli(*QUICK, "trainer.device=cuda", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2
    assert "trainer.device=cuda: this machine has no CUDA device" in one_line(proc)
    assert not (tmp_path / "run" / "results.json").exists()


FULL_AT_RESULTS = textwrap.dedent("""
    import errno, gradft.tracking as t
    real = t.atomic_write
    def full(path, text):
        if str(path).endswith("results.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, text)
    t.atomic_write = full
""")


def test_a_full_disk_at_the_results_write_is_one_line_and_leaves_no_results(tmp_path):
    proc = cli(*QUICK, f"hydra.run.dir={tmp_path / 'run'}", patch=FULL_AT_RESULTS)
    assert proc.returncode == 1
    line = one_line(proc)
    assert f"under {tmp_path / 'run'}" in line and "No space left on device (errno ENOSPC)" in line
    assert not (tmp_path / "run" / "results.json").exists()
    assert not list((tmp_path / "run").glob(".results.json.*"))  # no partial temporary file either


def read_only_under(prefix: str, err: int = errno.EROFS) -> str:
    """A patch: every directory created under ``prefix`` fails as on a read-only file system."""
    return textwrap.dedent(f"""
        import os
        real = os.mkdir
        def mkdir(path, *a, **k):
            if str(path).startswith({prefix!r}):
                raise OSError({err}, os.strerror({err}), str(path))
            return real(path, *a, **k)
        os.mkdir = mkdir
    """)


def test_a_read_only_run_folder_is_one_line_naming_it(tmp_path):
    run_dir = tmp_path / "ro" / "run"
    proc = cli(*QUICK, f"hydra.run.dir={run_dir}", patch=read_only_under(str(tmp_path / "ro")))
    assert proc.returncode == 1
    assert f"cannot write {tmp_path / 'ro'}" in one_line(proc) and "Read-only file system" in proc.stderr


@pytest.mark.slow
def test_a_read_only_wandb_folder_is_one_line_naming_it(tmp_path):
    run_dir = tmp_path / "run"
    proc = cli(*QUICK[:-1], "logger.mode=offline", f"hydra.run.dir={run_dir}",
               patch=read_only_under(str(run_dir / "wandb")))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"cannot write {run_dir / 'wandb'}" in one_line(proc)
    assert not (run_dir / "results.json").exists()

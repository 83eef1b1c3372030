"""Stops on the record: SIGTERM (timeout, schedulers, docker stop) and SIGINT to a real ``python -m gradft`` run log
one line saying where it stopped, finish the W&B offline run as failed and leave no results.json; progress lines
give the run's global step when it trains in chunks."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from gradft import stopping
from gradft.run import run

QUICK = ["model=tiny_bert", "eval.max_examples=16", "metrics.every=0", "trainer.threads=1"]


def wait_for(path: Path, needle: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and needle in path.read_text():
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended (rc {proc.returncode}) before {needle!r}")
        time.sleep(0.2)
    raise AssertionError(f"no {needle!r} in {path} after {timeout} s")


def _default_sigint() -> None:
    """A suite started in the background (``make test &``) inherits SIGINT ignored, and Python then keeps it ignored
    (as it should: that is how a shell protects background jobs from Ctrl-C). The run under test is a foreground one."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow  # a real CLI run: seconds of imports, then 100 steps
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signalled_run_says_where_it_stopped_fails_its_wandb_run_and_writes_no_results(sig, code, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    env.pop("WANDB_SILENT", None)  # W&B's own warnings (e.g. "git root ... does not exist") must not reach the user
    # 1000 steps: the signal lands at 10 %, long before the end (100 tiny steps could finish before it arrived)
    proc = subprocess.Popen([sys.executable, "-m", "gradft", *QUICK, "trainer.steps=1000", "logger.mode=offline",
                             f"hydra.run.dir={out}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=_default_sigint)
    wait_for(out / "__main__.log", "step 100/1000", proc)
    proc.send_signal(sig)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == code, text[-3000:]
    lines = [line for line in text.splitlines() if "interrupted at step" in line]
    assert len(lines) == 1 and f"{sig.name}: interrupted at step" in lines[0] and "/1000; no results written" in \
        lines[0], text[-3000:]
    assert "Traceback" not in text
    # the whole console is gradft's own log lines: no library noise (transformers' FutureWarnings, W&B's banners)
    ours = re.compile(r"\[[^]]+\]\[gradft[\w.]*\]\[(INFO|WARNING)\] - ")
    noise = [line for line in text.splitlines() if not ours.match(line)]
    assert not noise, noise
    assert not (out / "results.json").exists()
    (debug,) = out.glob("wandb/offline-run-*/logs/debug.log")
    assert "got exitcode: 1" in debug.read_text()  # finished as failed, not left running/crashed


def test_progress_gives_the_global_step_when_training_in_chunks(cfg_factory, caplog):
    """eval.select_every=20 trains a 40-step run in two chunks: progress says step 20/40 then 40/40, not 20/20 twice."""
    caplog.set_level(logging.INFO, logger="gradft.train")
    run(cfg_factory(*QUICK, "trainer.steps=40", "eval.select_every=20", "eval.splits=[select]"),
        report=lambda step, acc: None)
    steps = [m.split(": step ")[1].split(",")[0] for m in caplog.messages if ": step " in m]
    assert steps == [f"{s}/40" for s in range(4, 41, 4)], steps  # every 10 %, global step / total
    assert any("ETA" in m for m in caplog.messages)


def test_a_sigterm_swallowed_by_a_finalizer_still_stops_the_next_run_before_its_first_step(cfg_factory, tmp_path):
    """A signal handler that raises inside ``__del__`` loses its exception ("Exception ignored in"): the stop is
    remembered and the trainer's step loop raises it, so no run (no sweep trial, no grid cell) goes on after it."""

    class SignalsWhenCollected:
        def __del__(self) -> None:
            signal.raise_signal(signal.SIGTERM)  # the handler runs here, inside the finalizer, and is ignored

    with stopping.sigterm_interrupts():
        SignalsWhenCollected()  # collected at once
        cfg = cfg_factory(*QUICK, "trainer.steps=5")
        with pytest.raises(stopping.RunInterrupted, match=r"SIGTERM: interrupted at step 0/5; no results written"):
            run(cfg)
    assert not list(tmp_path.rglob("results.json"))
    with stopping.sigterm_interrupts():  # a new outermost block (the next run of this process) starts clean
        stopping.check()


def test_a_signal_inside_a_deferred_block_is_delivered_when_the_block_ends(monkeypatch):
    """W&B's calls run under ``deferred``: Ctrl-C cutting ``wandb.log`` in half left a coroutine never awaited."""
    monkeypatch.setattr(stopping, "_requested", None)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # a background suite may ignore SIGINT
    try:
        ran = []
        with pytest.raises(KeyboardInterrupt):
            with stopping.deferred():
                signal.raise_signal(signal.SIGINT)
                ran.append("the rest of the block")  # not cut: the handler only held the signal
        assert ran == ["the rest of the block"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the outer handler is back
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_sigterm_held_by_a_deferred_block_stops_the_run_even_if_the_block_raised(monkeypatch):
    monkeypatch.setattr(stopping, "_requested", None)
    with stopping.sigterm_interrupts():
        with pytest.raises(stopping.RunInterrupted) as e:
            with stopping.deferred():
                signal.raise_signal(signal.SIGTERM)
        assert e.value.exit_code == 143
        with pytest.raises(ValueError):  # the block fails on its own: the SIGTERM it held is not lost
            with stopping.deferred():
                signal.raise_signal(signal.SIGTERM)
                raise ValueError("W&B failed")
        with pytest.raises(stopping.RunInterrupted):
            stopping.check()  # the next step, cell or trial loop stops here

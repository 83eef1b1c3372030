"""Training length by one rule (gradft/stopping.py, run.py's loop): ``trainer.stop=early`` stops when the selection
accuracy stalls and evaluates the best checkpoint's weights; every run records steps_run, best_step, stopped_early
and final_train_loss. Real tiny-BERT runs on real task files."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_cfg

import gradft.run as grun
from gradft.config.schema import validate
from gradft.run import run
from gradft.stopping import EarlyStopping, final_train_loss

QUICK = ["model=tiny_bert", "task=promise_nfr", "shots=16", "eval.max_examples=16", "metrics.every=0",
         "logger.mode=disabled", "trainer.threads=1"]
# full fine-tuning at a high constant rate: the selection accuracy rises, then falls back and stays (measured)
STALLS = [*QUICK, "method=full", "method.lr=0.03", "trainer.schedule=constant", "data.select=pool",
          "trainer.stop=early", "trainer.patience=3", "eval.select_every=2", "trainer.steps=null", "trainer.epochs=20",
          "eval.splits=[eval,select]"]


def _fingerprint(model) -> tuple[float, ...]:
    return tuple(round(float(p.detach().double().sum()), 10) for p in model.parameters() if p.requires_grad)


def test_early_stopping_stops_when_select_accuracy_stalls_and_evaluates_the_best_weights(tmp_path, monkeypatch):
    seen: list[tuple[str, tuple[float, ...], int]] = []  # (split, trainable weights, examples) of every evaluation
    real = grun.evaluate

    def spy(model, examples, *args, **kwargs):
        split = args[5] if len(args) > 5 else kwargs.get("desc", "eval")
        seen.append((split, _fingerprint(model), len(examples)))
        return real(model, examples, *args, **kwargs)

    monkeypatch.setattr(grun, "evaluate", spy)
    r = run(make_cfg(*STALLS, out=tmp_path), tmp_path)
    curve = r["select_curve"]
    assert r["steps"] == 40  # the cap: 20 epochs of 16 shots / batch 8 (the epochs rule)
    assert r["stopped_early"] and r["steps_run"] < r["steps"] and r["steps_run"] == curve[-1][0]
    accs = [a for _, a in curve]
    best = max(accs)
    assert r["best_step"] == curve[accs.index(best)][0] < r["steps_run"]
    assert all(a <= best for a in accs[accs.index(best) + 1:]) and len(accs) - 1 - accs.index(best) == 3  # patience
    assert r["select_metrics"]["accuracy"] == pytest.approx(best)  # the restored checkpoint scores its own score
    assert accs[-1] != pytest.approx(best)  # ... which the last weights do not: they were replaced
    during = [w for split, w, _ in seen[: len(curve)]]
    best_weights, last_weights = during[accs.index(best)], during[-1]
    after = [(split, w) for split, w, _ in seen[len(curve):]]
    assert [s for s, _ in after] == ["eval", "select"] and all(w == best_weights for _, w in after)
    assert best_weights != last_weights
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["best_step"] == r["best_step"] and saved["data"]["select_split"]["select"] == 170


def test_every_run_records_its_length_and_final_train_loss(tmp_path):
    r = run(make_cfg(*QUICK, "trainer.steps=6", out=tmp_path), tmp_path)  # the default: trainer.stop=fixed
    assert (r["steps"], r["steps_run"], r["best_step"], r["stopped_early"]) == (6, 6, 6, False)
    losses = r["history"]["train/loss"]
    assert r["final_train_loss"] == pytest.approx(sum(losses[-2:]) / 2)  # 16 shots / batch 8: an epoch is 2 steps
    assert r["select_curve"] == [] and "select_split" not in r["data"]


def test_early_stopping_keeps_the_earliest_best_and_restores_it():
    w = torch.nn.Parameter(torch.zeros(3))
    stop = EarlyStopping([w], patience=2)
    for step, acc in [(2, 0.5), (4, 0.7), (6, 0.7), (8, 0.6)]:
        with torch.no_grad():
            w.fill_(step)
        done = stop.update(step, acc)
    assert done and stop.best_step == 4 and stop.best_acc == 0.7  # a tie is no gain
    stop.restore()
    assert torch.equal(w.detach(), torch.full((3,), 4.0))
    assert not EarlyStopping([w], 1).update(2, 0.1)
    assert final_train_loss([1.0, float("nan"), 3.0, 5.0], 4, 3) == pytest.approx(4.0)  # skipped steps left out


@pytest.mark.parametrize("override, needle", [
    (["trainer.stop=early"], "eval.select_every"),
    (["trainer.stop=sometimes"], "trainer.stop"),
    (["trainer.stop=early", "eval.select_every=4", "trainer.patience=0"], "trainer.patience"),
    (["data.select=eval"], "data.select"),
    (["data.select=pool", "data.select_size=0"], "data.select_size"),
])
def test_bad_stop_and_selection_options_fail_before_any_model_loads(override, needle):
    with pytest.raises(ValueError, match=needle):
        validate(make_cfg(*QUICK, *override))

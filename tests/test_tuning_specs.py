"""The fair-tuning sweeps of each setting (sweeps/tune_<setting>_<method>.yaml): one per method, the same budget and
scoring for all, and every point of every space a valid run config."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradft.config.schema import validate
from gradft.experiments.launch import compose_run
from gradft.experiments.sweep_spec import load_spec

SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"
METHODS = ["full", "adapter", "lora", "prompt", "ours"]


@pytest.mark.parametrize("setting", ["minilm", "smollm2"])
def test_every_method_of_a_setting_gets_the_same_budget_tasks_and_base(setting):
    specs = {m: load_spec(SWEEPS / f"tune_{setting}_{m}.yaml") for m in METHODS}
    # the common budget: n_trials less the trials a study added after widening a range at whose edge its best sat
    assert len({(s.n_trials - s.widened, s.n_seeds, tuple(s.tasks), s.prune_on, s.out_dir)
                for s in specs.values()}) == 1
    bases = {tuple(o for o in s.base if not o.startswith(("method=", "guidance."))) for s in specs.values()}
    assert len(bases) == 1, bases  # guidance.* options (ours' fd_r) are ours' own: the baselines have no guidance
    assert not [o for m, s in specs.items() if m != "ours" for o in s.base if o.startswith("guidance.")]
    for m, s in specs.items():
        assert f"method={m}" in s.base and "method.lr" in s.space
        assert len(s.enqueue) == 1 + s.widened  # the defaults, as one of the budget (+ each widening trial's point)
        assert all(set(p) == set(s.space) for p in s.enqueue)
    assert {"guidance.lambda1", "guidance.lambda2", "guidance.tau"} <= set(specs["ours"].space)


@pytest.mark.parametrize("setting", ["minilm", "smollm2"])
def test_the_top_of_every_range_composes_into_a_valid_run(setting):
    for m in METHODS:
        s = load_spec(SWEEPS / f"tune_{setting}_{m}.yaml")
        point = {k: d["high"] for k, d in s.space.items()}
        cfg = compose_run([*s.base, *(f"{k}={v}" for k, v in point.items()), f"task={s.tasks[0]}",
                           "paths.output_dir=/tmp/gradft-spec"])
        validate(cfg)
        assert cfg.method.lr == pytest.approx(point["method.lr"])

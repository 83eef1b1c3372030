"""A sweep point where training diverges (non-finite losses past trainer.max_skipped) is a bad point, not a broken
trial: the trial is PRUNED (it counts in the budget, the sampler sees it) and says where it diverged."""

from __future__ import annotations

from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from gradft.experiments import sweep

ROOT = Path(__file__).resolve().parent.parent


def test_a_diverging_point_is_pruned_and_counts_in_the_budget(tmp_path):
    spec = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())
    spec.update(storage=f"sqlite:///{tmp_path}/study.db", out_dir=str(tmp_path / "out"), tasks=["cb"], n_trials=2,
                base=[*spec["base"], "method=full", "trainer.steps=4", "trainer.max_skipped=1",
                      "trainer.max_grad_norm=0", "trainer.schedule=constant"],
                enqueue=[{"method.lr": 1.0e30}],  # one update puts the weights at ~1e30: every later loss is inf
                space={"method.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert sweep.main([str(path), "--conf-dir", str(tmp_path / "conf")]) == 0
    ts = optuna.load_study(study_name="smoke", storage=spec["storage"]).get_trials()
    assert [t.state for t in ts] == [TrialState.PRUNED, TrialState.COMPLETE]  # 2 trials: the budget, no retry
    assert ts[0].params["method.lr"] == 1.0e30 and ts[0].user_attrs["diverged"].startswith("cb/s0: ")

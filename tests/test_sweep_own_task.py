"""docs/sweeps.md "Sweep your own task", run as written (issue 31, item 6): a sweep over a task yaml in the user's
config dir, its trials, study and best file outside the repo, then the best file run with ``--config-dir``; the best
file names the selection split truthfully and holds no ``hydra.*`` key. Real Optuna storage, a real tiny model; the
tiny-model overrides are appended to the documented commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import ROOT

TINY = ["model=tiny_bert", "trainer.steps=1", "eval.max_examples=8", "metrics.every=0", "logger.mode=disabled",
        "trainer.threads=1", "shots=6"]
TASK = """\
name: reviews
root: {root}
fields: [sentence]
label_field: label
train: {{path: reviews.txt, kind: csv, delimiter: "@", columns: [sentence, label]}}
split: {{seed: 0, select: 12, eval: 24}}
metrics: [accuracy, f1_macro]
"""


def documented(section: str) -> tuple[dict, list[str]]:
    """The spec and the shell commands of a docs/sweeps.md section."""
    text = (ROOT / "docs" / "sweeps.md").read_text().split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    spec = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    bash = re.search(r"```bash\n(.*?)```", text, re.S).group(1).replace("\\\n", " ")
    return spec, [line.split() for line in bash.strip().splitlines()]


def sh(argv: list[str], home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
           "HOME": str(home)}
    argv = [a.replace("$HOME", str(home)).replace("~", str(home)).strip('"') for a in argv]  # as bash would
    return subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow
def test_the_documented_own_task_sweep_runs_outside_the_repo_and_its_best_file_runs_with_config_dir(tmp_path):
    spec, (sweep_cmd, run_cmd) = documented("Sweep your own task")
    home = tmp_path / "home"
    (home / "my_conf" / "task").mkdir(parents=True)
    (home / "my_sweeps").mkdir()
    labels = ["negative", "neutral", "positive"]
    (home / "data").mkdir()
    (home / "data" / "reviews.txt").write_text("".join(f"review {i} is {labels[i % 3][:3]}ish@{labels[i % 3]}\n"
                                                       for i in range(90)))
    (home / "my_conf" / "task" / "reviews.yaml").write_text(TASK.format(root=home / "data"))
    (home / "my_sweeps" / "reviews_lora.yaml").write_text(yaml.safe_dump({**spec, "n_trials": 2, "n_seeds": 1}))
    before = {p.name for p in (ROOT / "conf" / "experiment").iterdir()}

    proc = sh([*sweep_cmd, *TINY], home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="reviews_lora", storage=f"sqlite:///{home}/runs/sweeps/reviews_lora.db")
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials()) == 2
    assert list((home / "runs" / "sweeps" / "reviews_lora").glob("trial_*/reviews/s0/results.json"))
    best = home / "my_conf" / "experiment" / "best_reviews_lora.yaml"
    text = best.read_text()
    assert "hydra" not in yaml.safe_load(text) and "FewGLUE" not in text and "selection-split" in text
    assert f"--config-dir {home / 'my_conf'} experiment=best_reviews_lora" in text
    assert {p.name for p in (ROOT / "conf" / "experiment").iterdir()} == before  # nothing written into the repo
    assert not (ROOT / "outputs" / "sweeps" / "reviews_lora.db").exists()

    proc = sh([*run_cmd, *TINY, f"hydra.run.dir={tmp_path / 'run'}"], home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["method"]["lr"] == pytest.approx(study.best_params["method.lr"])
    assert (cfg["task"]["name"], cfg["seed"]) == ("reviews", 100)

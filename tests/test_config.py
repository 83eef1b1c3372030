"""Config errors before anything is loaded (``gradft.config.schema``): every number finite and in range, 0 training
steps,
unknown keys with a "did you mean", prompt fields; and the CLI answering them in seconds without importing torch.
(Which options of a config group exist, and the run-level checks that need data: test_run.py, test_data.py.)"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from conftest import ROOT, make_cfg

from gradft.config.prompt import FORMAT_FIELDS, task_fields
from gradft.config.schema import check_override_keys, schema, validate

TINY = ["model=tiny_bert", "trainer.steps=2", "eval.max_examples=16"]


@pytest.mark.parametrize("overrides,needle", [
    (["trainer.steps=null", "trainer.epochs=0"], "trainer.epochs=0 gives 0 training steps"),
    (["trainer.steps=0"], "trainer.steps=0 gives 0 training steps"),
    (["eval.max_examples=-5"], "eval.max_examples=-5: must be an integer > 0"),
    (["eval.max_examples=0"], "eval.max_examples=0"),
    (["eval.max_examples=2.5"], "eval.max_examples=2.5"),
    (["method=ours", "guidance.lambda1=nan"], "guidance.lambda1=nan: must be a finite number"),
    (["method=ours", "guidance.tau=inf"], "guidance.tau=inf"),
    (["method.lr=nan"], "method.lr=nan"),
    (["method.lr=inf"], "method.lr=inf"),
    (["trainer.epochs=nan"], "trainer.epochs=nan"),
    (["trainer.warmup_ratio=2"], "trainer.warmup_ratio=2"),
    (["trainer.schedule=cosine"], "trainer.schedule='cosine'"),
    (["trainer.device=tpu"], "trainer.device='tpu'"),
    (["trainer.threads=0"], "trainer.threads=0"),
    (["metrics.every=-1"], "metrics.every=-1: must be an integer ≥ 0"),
    (["eval.select_every=-2"], "eval.select_every=-2"),
    (["eval.splits=[test]"], "eval.splits=['test']"),
    (["model.max_length=0"], "model.max_length=0"),
    (["model=hub", "model.name_or_path=/nonexistent/dir"], "model.name_or_path='/nonexistent/dir': no such folder"),
    (["+foo=1"], "unknown config key: foo"),
    (["+trainer.stepz=3"], "unknown config key: trainer.stepz; did you mean trainer.steps?"),
    (["+method.bottleneck=4"], "method.bottleneck: not a key of method lora"),
    (["method=lora", "+method.dropuot=0.1"], "did you mean method.dropout?"),
    (["head=lm", "task.prompt.template='{nope} and {premise}'"], "task.prompt.template uses {nope}"),
    (["head=lm", "task=copa", "task.prompt.candidate=' {answer}'"], "task.prompt.candidate uses {answer}"),
])
def test_bad_values_and_unknown_keys_are_refused_naming_the_key(overrides, needle):
    with pytest.raises(ValueError) as e:
        validate(make_cfg(*TINY, *overrides))
    assert needle in str(e.value), str(e.value)


@pytest.mark.parametrize("overrides", [
    ["metrics.every=0"],                                     # gradient metrics off (sweeps)
    ["head=lm", "model=tiny_llama", "shots=0"],              # zero-shot: no training step is right
    ["head=lm", "model=tiny_llama", "shots=0", "trainer.epochs=0", "trainer.steps=null"],
    ["trainer.steps=null", "trainer.epochs=0.5"],            # half an epoch: 2 steps
    ["method=adapter", "method.bottleneck=4"],
    ["method=lora", "+method.target_modules=[query]"],       # a dataclass field no yaml sets
    ["method=ours", "guidance.source_task=cb", "guidance.lambda3=0.1"],
    ["experiment=table1"],                                   # a grid node is inert in a run
    ["head=lm", "task=copa"], ["head=lm", "task=wic"], ["head=lm", "task=multirc"], ["head=lm", "task=boolq"],
])
def test_valid_configs_pass(overrides):
    validate(make_cfg(*TINY, *overrides))


def test_every_shipped_config_file_is_in_the_key_schema():
    sch = schema()
    for group in ("model", "task", "guidance", "method", "trainer", "logger"):
        assert group in sch
    assert {"steps", "epochs", "batch_size"} <= sch["trainer"]
    assert {"bottleneck", "r", "num_virtual_tokens", "kind"} <= sch["method"]


def test_prompt_fields_of_each_format_match_the_examples_the_data_layer_builds():
    """FORMAT_FIELDS (torch-free, for the early check) must be what gradft.data really puts in Example.fields."""
    from gradft import data as gdata
    from gradft.data.prompting import fields_of

    for task in ("boolq", "cb", "copa", "multirc", "rte", "wic"):
        cfg = make_cfg(f"task={task}", "head=lm")
        ex = gdata.load_task(cfg.task, cfg.data).eval[0]
        spec = __import__("gradft.config.prompt", fromlist=["prompt_spec"]).prompt_spec(
            cfg.task, len(cfg.task.labels), cfg.task.format == "copa")
        assert set(fields_of(ex, spec)) == task_fields(cfg.task, spec), task
    assert set(FORMAT_FIELDS) == {"wic", "copa", "multirc"}


@pytest.mark.parametrize("override,hint", [("trainer.stepz=3", "did you mean trainer.steps?"),
                                           ("shotz=4", "did you mean shots?"),
                                           ("eval.max_example=4", "did you mean eval.max_examples?")])
def test_overriding_a_key_that_does_not_exist_says_what_it_may_have_meant(override, hint):
    with pytest.raises(ValueError, match="no such config key") as e:
        check_override_keys([override])
    assert hint in str(e.value)
    check_override_keys(["trainer.steps=3", "+foo=1", "hydra.run.dir=x", "hydra/launcher=joblib", "-m"])  # not here


def cli(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "gradft", *args, "logger.mode=disabled"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    return proc, time.perf_counter() - t0


@pytest.mark.parametrize("args,needle", [
    (["shots=abc"], "shots='abc': must be an integer > 0"),
    (["trainer.stepz=3"], "did you mean trainer.steps?"),
    (["+foo=1"], "unknown config key: foo"),
    (["method=ours", "guidance.lambda1=nan"], "guidance.lambda1=nan"),
    (["trainer.epochs=0"], "0 training steps"),
    (["method=ours", "guidance.tau=-1"], "guidance.tau=-1: must be a finite number ≥ 0"),
    (["method=ours", "guidance.hvp=magic"], "guidance.hvp='magic'"),
    (["head=lm", "task.prompt.template='{nope}: {premise}'"], "task.prompt.template uses {nope}"),
])
def test_cli_config_errors_exit_2_in_seconds_without_importing_torch(args, needle):
    proc, seconds = cli(*args)
    err = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    assert proc.returncode == 2 and needle in err, err[-2000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    heavy = {"torch", "transformers", "peft", "datasets", "wandb", "optuna", "matplotlib"} & imported
    assert not heavy, heavy
    assert "Traceback" not in err and seconds < 15, seconds  # ~1-2 s alone; the bound allows a loaded machine


def test_head_lm_with_labels_inferred_from_the_data_passes_the_early_check():
    from conftest import make_cfg

    from gradft.config.schema import validate

    validate(make_cfg("task=cb", "head=lm", "task.labels=null"))  # counted once the train pool is read
    with pytest.raises(ValueError, match="verbalizer"):
        validate(make_cfg("task=cb", "head=lm", "task.prompt.verbalizer=[' Yes',' No']"))  # listed: 3 needed


def test_config_dataclasses_hold_no_default_values_the_yaml_is_the_one_place():
    from dataclasses import MISSING, fields

    from gradft.config import nodes
    from gradft.config.guidance import GuidanceConfig
    from gradft.config.method import CONFIGS

    classes = [GuidanceConfig, nodes.TrainerConfig, nodes.MetricsConfig, nodes.EvalConfig, nodes.DataConfig,
               nodes.SaveConfig, nodes.LoggerConfig, nodes.ModelConfig, nodes.RunValues, *CONFIGS.values()]
    for cls in classes:
        defaults = [f.name for f in fields(cls) if f.default is not MISSING or f.default_factory is not MISSING]
        assert defaults == [], f"{cls.__name__}: {defaults} repeat the yaml"


def test_from_yaml_gives_the_yaml_values_then_the_overrides_and_refuses_a_field_that_does_not_exist():
    from dataclasses import asdict

    import yaml

    from gradft import CONF_DIR
    from gradft.config.guidance import GuidanceConfig
    from gradft.config.method import method_config, method_node
    from gradft.config.nodes import TrainerConfig

    structured = yaml.safe_load((CONF_DIR / "guidance" / "structured.yaml").read_text())
    assert asdict(GuidanceConfig.from_yaml(lambda1=0.3)) == {**structured, "lambda1": 0.3}
    trainer = yaml.safe_load((CONF_DIR / "trainer" / "default.yaml").read_text())
    assert asdict(TrainerConfig.from_yaml(steps=5)) == {**trainer, "steps": 5}
    lora = yaml.safe_load((CONF_DIR / "method" / "lora.yaml").read_text())
    assert asdict(method_config(method_node("lora", r=4))) == {**{k: v for k, v in lora.items() if k != "kind"},
                                                               "r": 4}
    with pytest.raises(TypeError, match="lambda9"):
        GuidanceConfig.from_yaml(lambda9=1.0)
    with pytest.raises(ValueError, match="guidance.tau=-1"):
        GuidanceConfig.from_yaml(tau=-1)


def test_a_composed_config_builds_the_same_nodes_as_the_yaml_files():
    from gradft.config.guidance import GuidanceConfig
    from gradft.config.nodes import EvalConfig, MetricsConfig, TrainerConfig

    cfg = make_cfg("method=ours")
    assert GuidanceConfig.from_cfg(cfg.guidance) == GuidanceConfig.from_yaml()
    assert TrainerConfig.from_cfg(cfg.trainer) == TrainerConfig.from_yaml()
    assert MetricsConfig.from_cfg(cfg.metrics) == MetricsConfig.from_yaml()
    assert EvalConfig.from_cfg(cfg.eval) == EvalConfig.from_yaml()

"""The trained model out (issue 29): what a run saves, that it reloads with gradft.trained.predict and with plain
transformers/peft, and that the reloaded model reproduces the run's eval predictions and accuracy exactly."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import make_cfg
from omegaconf import OmegaConf

from gradft import data as gdata
from gradft.config.schema import validate
from gradft.evaluate import eval_examples as capped_eval
from gradft.experiments.grid import plan
from gradft.experiments.launch import compose_run
from gradft.run import run
from gradft.tracking import config_key
from gradft.trained.predict import main as predict_main
from gradft.trained.predict import score

QUICK = ["model=tiny_bert", "trainer.steps=3", "eval.max_examples=24", "metrics.every=0", "logger.mode=disabled",
         "method.lr=5e-2"]  # a large step, so that the tiny model's scores move off their initial values
LLAMA_LM = ["model=tiny_llama", "head=lm", *QUICK[1:]]


def saved_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def assert_reloads_exactly(out: Path, results: dict) -> list[dict]:
    """predictions.jsonl gives results.json's accuracy; the reloaded model gives the same rows, bit for bit."""
    rows = saved_rows(out)
    assert len(rows) == results["eval_examples"]
    assert sum(r["pred_index"] == r["gold_index"] for r in rows) / len(rows) == results["metrics"]["accuracy"]
    again, metrics, _ = score(out)
    assert again == rows  # every example's every score, exactly
    assert metrics["accuracy"] == results["metrics"]["accuracy"]
    assert metrics == {k: results["metrics"][k] for k in metrics}
    return rows


def eval_examples(out: Path) -> list[gdata.Example]:
    cfg = OmegaConf.load(out / "config.yaml")
    return capped_eval(gdata.load_task(cfg.task, cfg.data).eval, cfg.eval.max_examples)


def plain_logits(model, tok, ex: gdata.Example) -> list[float]:
    """One example through a model loaded with plain transformers/peft (no gradft), as a classifier scores it."""
    enc = tok(*ex.texts, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits[0].tolist()


@pytest.mark.parametrize("method", ["lora", "ours", "prompt"])
def test_a_peft_classifier_run_saves_an_adapter_with_its_new_head_that_reloads_exactly(cfg_factory, tmp_path,
                                                                                         method):
    """LoRA, ours (LoRA + guidance) and prompt tuning with a new classifier head: peft's format, head included."""
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "run"
    r = run(cfg_factory(f"method={method}", "task=rte", *QUICK))
    mdir = out / "model"
    assert r["saved"]["model"] == str(mdir) and r["saved"]["format"] == "peft"
    assert r["saved"]["predictions"] == str(out / "predictions.jsonl")
    conf = json.loads((mdir / "adapter_config.json").read_text())
    peft_type = "PROMPT_TUNING" if method == "prompt" else "LORA"
    assert conf["peft_type"] == peft_type and conf["task_type"] == "SEQ_CLS" and "classifier" in conf["modules_to_save"]
    with safe_open(str(mdir / "adapter_model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert any("classifier" in k for k in keys)  # the new head is in the adapter
    assert any(("prompt_embeddings" if method == "prompt" else "lora_A") in k for k in keys)
    meta = json.loads((mdir / "gradft_model.json").read_text())
    assert meta["method"] == method and meta["labels"] == ["entailment", "not_entailment"]
    rows = assert_reloads_exactly(out, r)
    assert len({json.dumps(row["scores"]) for row in rows}) > 1  # scores differ per example: a real check
    # plain transformers + peft, no gradft: the base named in adapter_config.json, then the adapter
    base = AutoModelForSequenceClassification.from_pretrained(conf["base_model_name_or_path"])
    assert base.config.id2label == {0: "entailment", 1: "not_entailment"}
    model = PeftModel.from_pretrained(base, mdir).eval()
    tok = AutoTokenizer.from_pretrained(mdir)
    for ex, row in list(zip(eval_examples(out), rows, strict=True))[:4]:
        assert plain_logits(model, tok, ex) == pytest.approx(list(row["scores"].values()), abs=1e-5)


def test_a_full_fine_tuning_run_saves_the_model_with_its_tokenizer_and_label_names(cfg_factory, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "run"
    r = run(cfg_factory("method=full", "task=cb", *QUICK, "method.lr=1e-3"))
    mdir = out / "model"
    assert r["saved"]["format"] == "full" and (mdir / "model.safetensors").is_file()
    assert not (out / "base_model").exists()  # the whole model is saved: no base needed
    rows = assert_reloads_exactly(out, r)
    model = AutoModelForSequenceClassification.from_pretrained(mdir).eval()
    assert model.config.id2label == {0: "entailment", 1: "contradiction", 2: "neutral"}
    assert model.config.label2id == {"entailment": 0, "contradiction": 1, "neutral": 2}
    tok = AutoTokenizer.from_pretrained(mdir)
    for ex, row in list(zip(eval_examples(out), rows, strict=True))[:4]:
        assert plain_logits(model, tok, ex) == pytest.approx(list(row["scores"].values()), abs=1e-5)


def test_a_bottleneck_adapter_run_saves_its_trainable_state_and_reloads_exactly(cfg_factory, tmp_path):
    from safetensors import safe_open

    out = tmp_path / "run"
    r = run(cfg_factory("method=adapter", "task=rte", *QUICK, "method.lr=1e-2"))
    assert r["saved"]["format"] == "adapter"
    with safe_open(str(out / "model" / "adapter_model.safetensors"), "pt") as f:
        n = sum(f.get_tensor(k).numel() for k in f.keys())
    assert n == r["trainable_params"]
    meta = json.loads((out / "model" / "gradft_model.json").read_text())
    assert meta["adapter"]["bottleneck"] == 32 and meta["base_model"] == str((out / "base_model").resolve())
    assert_reloads_exactly(out, r)


@pytest.mark.parametrize(("task", "method"), [("cb", "lora"), ("copa", "lora"), ("rte", "prompt")])
def test_an_lm_head_run_reloads_and_scores_its_prompt_exactly(cfg_factory, tmp_path, task, method):
    """head=lm on a tiny causal Llama: label words (CB), candidates with prefix reuse (COPA), prompt tuning (RTE)."""
    out = tmp_path / "run"
    r = run(cfg_factory(f"method={method}", f"task={task}", *LLAMA_LM))
    conf = json.loads((out / "model" / "adapter_config.json").read_text())
    assert conf["task_type"] == "CAUSAL_LM" and r["saved"]["format"] == "peft"
    meta = json.loads((out / "model" / "gradft_model.json").read_text())
    assert meta["head"] == "lm" and meta["prompt"]["template"]
    assert_reloads_exactly(out, r)


@pytest.mark.parametrize("overrides", [["task=copa"], ["task=cb", "trainer.precision=bf16"]])
def test_multiple_choice_and_bf16_classifier_runs_reload_exactly(cfg_factory, tmp_path, overrides):
    """COPA's one score per choice (no id2label to give), and a bf16-autocast run (re-scored under autocast too)."""
    r = run(cfg_factory("method=lora", *QUICK, *overrides))
    meta = json.loads((tmp_path / "run" / "model" / "gradft_model.json").read_text())
    assert meta["num_labels"] == (1 if "task=copa" in overrides else 3)
    assert_reloads_exactly(tmp_path / "run", r)


def test_a_zero_shot_run_points_at_the_pretrained_model(cfg_factory, tmp_path):
    r = run(cfg_factory("task=cb", "shots=0", *LLAMA_LM))
    assert r["saved"]["format"] == "pretrained"
    assert_reloads_exactly(tmp_path / "run", r)


def test_predict_reads_a_file_in_the_tasks_fields_with_or_without_labels(cfg_factory, tmp_path, capsys):
    out = tmp_path / "run"
    run(cfg_factory("method=lora", "task=rte", *QUICK))
    rows = saved_rows(out)[:5]
    val = Path(OmegaConf.load(out / "config.yaml").data.superglue_root, "RTE", "val.jsonl")
    raw = [json.loads(line) for line in val.read_text().splitlines()[:5]]
    with open(tmp_path / "in.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["idx", "premise", "hypothesis", "label"])
        w.writeheader()
        w.writerows(raw)
    assert predict_main([str(out), "--input", str(tmp_path / "in.csv"), "--out", str(tmp_path / "p.jsonl")]) == 0
    got = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [g["id"] for g in got] == [r["id"] for r in rows] and [g["gold"] for g in got] == [r["gold"] for r in rows]
    assert [g["pred"] for g in got] == [r["pred"] for r in rows]
    flat = [v for g in got for v in g["scores"].values()]
    assert flat == pytest.approx([v for r in rows for v in r["scores"].values()], abs=1e-5)  # other batches, padding
    (tmp_path / "unlabelled.jsonl").write_text("".join(json.dumps({k: v for k, v in x.items() if k != "label"}) + "\n"
                                                       for x in raw))
    capsys.readouterr()
    assert predict_main([str(out), "--input", str(tmp_path / "unlabelled.jsonl")]) == 0
    streamed = capsys.readouterr()
    assert [json.loads(line)["gold"] for line in streamed.out.splitlines()] == [None] * 5
    assert "no gold labels" in streamed.err
    assert predict_main([str(out), "--eval"]) == 0
    results = json.loads((out / "results.json").read_text())
    results["metrics"]["accuracy"] += 0.5
    (out / "results.json").write_text(json.dumps(results))
    assert predict_main([str(out), "--eval"]) == 1  # a mismatch is an error


def test_save_model_false_saves_no_model_and_a_run_without_a_saved_model_says_so(cfg_factory, tmp_path, capsys):
    out = tmp_path / "run"
    r = run(cfg_factory("task=rte", *QUICK, "save.model=false", "save.predictions=false"))
    assert r["saved"] == {} and not (out / "model").exists() and not (out / "predictions.jsonl").exists()
    assert predict_main([str(out), "--eval"]) == 2
    assert "save.model=true" in capsys.readouterr().err


def test_where_a_run_saves_is_not_part_of_its_config_key():
    """Committed cells (configs from before ``save:`` existed) must keep their keys: save is dropped like paths."""
    cfg = make_cfg("model=tiny_bert")
    old = OmegaConf.to_container(cfg, resolve=True)
    del old["save"]
    assert config_key(cfg) == config_key(make_cfg("model=tiny_bert", "save.model=false")) == config_key(old)
    with pytest.raises(ValueError, match="save.model"):
        validate(make_cfg("save.model=maybe"))


def test_grids_save_no_model_unless_asked():
    p = plan("smoke", ["task=cb", "method=ours"], "/tmp/gradft-test-grid")
    cfg = compose_run([*p.cell_overrides(p.cells[0]), "paths.output_dir=."])
    assert cfg.save.model is False and cfg.save.predictions is False
    p = plan("smoke", ["task=cb", "method=ours", "save.model=true"], "/tmp/gradft-test-grid")
    cfg = compose_run([*p.cell_overrides(p.cells[0]), "paths.output_dir=."])
    assert cfg.save.model is True and cfg.save.predictions is False
    assert make_cfg().save.model is True  # one run: saved by default


def test_predict_reads_a_table_tasks_file_by_its_fields_and_label_field(tmp_path):
    from gradft.trained.predict import read_examples

    cfg = OmegaConf.create({"task": {"name": "reviews", "format": "pair", "fields": ["sentence"],
                                     "label_field": "sentiment", "map_labels": {"meh": "neutral"}}})
    meta = {"label_values": ["negative", "neutral", "positive"]}
    (tmp_path / "new.csv").write_text("id,sentence,sentiment\na,Great.,positive\nb,So so.,meh\nc,No label.,\n")
    exs = read_examples(tmp_path / "new.csv", cfg, meta)
    assert [(e.idx, e.texts, e.label) for e in exs] == [("a", ("Great.",), 2), ("b", ("So so.",), 1),
                                                        ("c", ("No label.",), -1)]
    assert exs[0].field_map == {"sentence": "Great."}  # head=lm templates read the fields by name
    (tmp_path / "bad.csv").write_text("id,text\na,Great.\n")
    with pytest.raises(gdata.DataError, match="sentence"):
        read_examples(tmp_path / "bad.csv", cfg, meta)

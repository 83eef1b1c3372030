"""method=icl (in-context learning, head=lm) on a tiny causal Llama with a real tokenizer and the real task files: the
demonstrations (gold answers, the seed's order, then zero-shot's query), dropped to fit the context and counted,
icl at k=0 = zero-shot, head=classifier refused, the grids plan it and the report names its row."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import make_cfg

from gradft import data as gdata
from gradft.config.prompt import prompt_spec
from gradft.config.schema import validate
from gradft.data.prompting import PromptCollator, candidates
from gradft.experiments import grid
from gradft.forward import logits_of
from gradft.methods.icl import SharedPrefixLM, attach, demo_order, demo_text
from gradft.models import load_backbone
from gradft.report import build as report
from gradft.run import run


def _setup(task_name: str, k: int = 4, context: int | None = None, seed: int = 7, reuse: bool = True):
    """(collator without demonstrations, collator with them, Demonstrations, task, spec, shots, model, tokenizer)."""
    cfg = make_cfg("model=tiny_llama", "head=lm", f"task={task_name}")
    task = gdata.load_task(cfg.task, cfg.data)
    spec = prompt_spec(cfg.task, len(task.labels), task.multiple_choice)
    torch.manual_seed(0)
    model, tok = load_backbone(cfg.model, 2, cfg.paths.cache_dir, "lm")
    shots = gdata.sample_shots(task.train_pool, k, 0) if k else []
    plain = PromptCollator(tok, spec.max_length or cfg.model.max_length, spec, "causal", reuse)
    icl = PromptCollator(tok, spec.max_length or cfg.model.max_length, spec, "causal", reuse)
    demos, _ = attach(icl, shots, seed, model, tok, context)
    return plain, icl, demos, task, spec, shots, model.eval(), tok


@pytest.mark.parametrize("task_name", ["cb", "copa", "overruling"])
def test_an_icl_prompt_is_the_k_demonstrations_with_their_gold_answers_in_the_seeds_order_then_the_query(task_name):
    plain, icl, demos, task, spec, shots, _, tok = _setup(task_name)
    order = demo_order(shots, 7)
    expected = list(shots)
    random.Random(7).shuffle(expected)  # the run's seed fixes the order of the drawn shots
    assert [e.idx for e in order] == [e.idx for e in expected] and demos.summary()["order"] == [e.idx for e in order]
    ex = task.eval[0]
    key = "prefix_ids" if task.multiple_choice else "input_ids"  # copa: the prompt row whose cache the candidates share
    zero = plain([ex])[key][0].tolist()
    row = icl([ex])[key][0].tolist()
    demo_ids = [t for e in order for t in tok(demo_text(e, spec), add_special_tokens=False)["input_ids"]]
    assert row == zero[:1] + demo_ids + zero[1:]  # [CLS] demo_1 … demo_k query (the query exactly zero-shot's)
    for e in order:  # each demonstration: its own prompt completed by its gold answer
        gold = candidates(e, spec)[e.label] if task.multiple_choice else spec.verbalizer[e.label]
        assert demo_text(e, spec).endswith(gold + "\n\n") and gold.strip()
    text = tok.decode(row)
    positions = [text.find(tok.decode(tok(demo_text(e, spec), add_special_tokens=False)["input_ids"])) for e in order]
    assert -1 not in positions and positions == sorted(positions) and demos.used == [4]
    if task.multiple_choice:  # the candidates are scored after the demonstrations + the prompt, as zero-shot's
        assert torch.equal(icl([ex])["input_ids"], plain([ex])["input_ids"])


def test_demonstrations_that_do_not_fit_the_context_are_dropped_from_the_end_and_the_count_is_recorded():
    plain, icl, demos, task, spec, shots, _, tok = _setup("cb", k=6)
    ex = task.eval[0]
    zero = plain([ex])["input_ids"][0].tolist()
    sizes = [len(ids) for ids in demos.ids]
    demos.context = len(zero) + sizes[0] + sizes[1] + sizes[2] - 1  # room for two demonstrations, not three
    row = icl([ex])["input_ids"][0].tolist()
    assert row == zero[:1] + demos.ids[0] + demos.ids[1] + zero[1:] and len(row) <= demos.context
    demos.context = len(zero) + sizes[0] - 1  # not even the first
    assert icl([ex])["input_ids"][0].tolist() == zero
    assert demos.summary() | {"order": None} == {"k": 6, "context": demos.context, "rows": 2, "demos_mean": 1.0,
                                                 "demos_min": 0, "demos_max": 2, "demo_tokens": sum(sizes),
                                                 "order": None}
    # multiple choice: room is kept for the longest candidate, so the whole row (prompt + candidate) fits
    plain, icl, demos, task, spec, shots, _, tok = _setup("copa", k=6, context=60)
    batch = icl(task.eval[:4])
    rows = batch["prefix_mask"].sum(1)[:, None] + batch["attention_mask"].view(4, 2, -1).sum(2)
    assert int(rows.max()) <= 60 and 0 < min(demos.used) and max(demos.used) < 6


@pytest.mark.parametrize(("task_name", "reuse", "context"), [("cb", True, 2048), ("copa", True, 2048),
                                                             ("copa", False, 2048), ("cb", True, 420)])
def test_the_demonstrations_kv_cache_computed_once_gives_the_scores_of_full_rows(task_name, reuse, context):
    _, icl, demos, task, *_, model, _ = _setup(task_name, k=6, context=context, reuse=reuse)
    examples = task.eval[:6]  # queries of different lengths: padded rows after the shared demonstrations
    shared = SharedPrefixLM(model, demos)
    with torch.no_grad():
        for lo in (0, 3):  # two batches: the second reuses the first's prefix cache
            batch = icl(examples[lo: lo + 3])
            full, cached = logits_of(model, batch), logits_of(shared, batch)
            assert torch.allclose(cached, full, atol=1e-5, rtol=1e-5), (cached, full)
    if context == 2048:  # all 6 fit every row: one prefix, [CLS] + 6 demonstrations, computed once
        assert shared.hits == 2 and list(shared.caches) == [1 + sum(map(len, demos.ids))]
    else:  # rows with fewer demonstrations in a batch: the prefix they all share, the rest run in full
        assert len(set(demos.used)) > 1 and shared.hits >= 1


def test_an_icl_run_records_the_demonstrations_it_used_and_takes_no_step(tmp_path):
    cfg = make_cfg("model=tiny_llama", "task=cb", "head=lm", "method=icl", "shots=8", "method.context=200",
                   "eval.max_examples=12", out=tmp_path / "icl")
    res = run(cfg)
    saved = json.loads((tmp_path / "icl" / "results.json").read_text())
    assert saved["icl"] == res["icl"] and saved["steps"] == 0 and saved["trainable_params"] == 0
    info = saved["icl"]
    assert info["k"] == 8 and info["context"] == 200 and info["rows"] == 12
    assert 0 <= info["demos_min"] <= info["demos_mean"] <= info["demos_max"] < 8  # 200 tokens hold a few CB shots
    task = gdata.load_task(cfg.task, cfg.data)
    assert saved["shot_ids"] == [e.idx for e in gdata.sample_shots(task.train_pool, 8, 0)]  # every method's draw
    assert saved["metrics"]["gradient_stability"] is None and 0 <= saved["metrics"]["accuracy"] <= 1


def test_icl_with_no_shots_scores_exactly_as_zero_shot(tmp_path):
    plain, icl, demos, task, *_, model, _ = _setup("cb", k=0)
    batch_zero, batch_icl = plain(task.eval[:8]), icl(task.eval[:8])
    assert all(torch.equal(batch_zero[k], batch_icl[k]) for k in batch_zero)
    assert torch.equal(logits_of(model, batch_zero), logits_of(model, batch_icl)) and demos.used == [0] * 8
    for m in ("lora", "icl"):  # through run(): icl at shots=0 is zero-shot (the grid's k0 cell), to the last bit
        run(make_cfg("model=tiny_llama", "task=copa", "head=lm", "shots=0", f"method={m}", "eval.max_examples=16",
                     out=tmp_path / m))
    saved = {m: json.loads((tmp_path / m / "results.json").read_text()) for m in ("lora", "icl")}
    assert saved["icl"]["metrics"] == saved["lora"]["metrics"] and saved["icl"]["steps"] == 0


def test_icl_is_refused_for_the_classifier_head_and_with_guidance():
    with pytest.raises(ValueError, match="method=icl .* needs head=lm"):
        validate(make_cfg("method=icl", "task=cb"))
    with pytest.raises(ValueError, match="no training step"):
        validate(make_cfg("method=icl", "head=lm", "task=cb", "guidance=structured"))
    validate(make_cfg("method=icl", "head=lm", "task=cb"))


def test_lm_head_grids_plan_icl_as_an_untuned_row_and_keep_every_other_cells_key(tmp_path):
    out = tmp_path / "grid"
    narrowed = ["task=cb", "seed=100", "method=full,lora,icl"]
    p = grid.plan("table1_smollm2", narrowed, out)
    assert sorted(c.rel for c in p.cells) == ["cb/full/k0/s100", "cb/full/k32/s100", "cb/icl/k32/s100",
                                              "cb/lora/k32/s100"]  # no icl/k0: zero-shot is one cell per task
    without = grid.plan("table1_smollm2", ["task=cb", "seed=100", "method=full,lora"], out)
    assert {c.rel: k for c, k in without.keys.items()} == {c.rel: k for c, k in p.keys.items() if "icl" not in c.rel}
    for name in ("table1_smollm2", "figure2_smollm2", "figure3_smollm2"):
        assert "icl" in grid.grid_spec(name)["axes"]["method"]
    assert "icl" not in grid.grid_spec("table1_minilm")["axes"]["method"]  # a classifier-head grid has no icl row


def test_the_report_names_the_icl_row_icl_beside_zero_shot(tmp_path):
    def write(method: str, shots: int, seed: int, acc: float) -> None:
        d = tmp_path / "grid" / f"cb-{method}-{shots}-{seed}"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({
            "method": method, "task": "cb", "shots": shots, "seed": seed, "data_seed": seed, "model": "smollm2",
            "head": "lm", "guidance": "none", "config_key": method, "metrics": {"accuracy": acc}}))
        (d / "config.yaml").write_text(f"seed: {seed}\ndata_seed: {seed}\n")  # a result is valid beside its config

    write("full", 0, 100, 0.4)
    for seed in (100, 101):
        write("icl", 32, seed, 0.5)
        write("lora", 32, seed, 0.6)
    names = sorted(r["method"] for r in report.collect(tmp_path / "grid"))
    assert names == ["icl", "icl", "lora-lm", "lora-lm", "zero-shot"]


def test_the_tuned_grid_writer_adds_the_untuned_icl_row_to_lm_head_grids_only():
    from gradft.experiments.tuned import grid_doc

    def study(*base: str) -> dict:
        return {"method": "lora", "base": list(base), "own": [], "best": {"method.lr": 1e-3}, "n_trials": 4}

    lm = grid_doc("t", [study("model=smollm2", "head=lm")], [100], False, shots=[0, 32])
    assert lm["grid"]["axes"]["method"] == ["lora", "icl"] and "icl" not in lm["grid"]["per_method"]
    assert grid_doc("t", [study("model=minilm")], [100], False)["grid"]["axes"]["method"] == ["lora"]

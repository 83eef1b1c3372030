"""Table tasks (gradft/data/custom.py, tables.py): every file format and encoding, seeded stratified splits, dedup,
filter / map_labels, label inference, the hub path (through `datasets.load_dataset`'s own local builders: the hub is
unreachable here), the baselines, and each bad input as a DataError naming the file and line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from gradft.data import DataError, load_task
from gradft.metrics import baselines

ROWS = [{"text": f"sentence number {i} {'é' if i % 5 == 0 else ''}".strip(), "y": ["neg", "pos", "mid"][i % 3]}
        for i in range(60)]


def write(path: Path, rows: list[dict], kind: str, encoding: str = "utf-8") -> Path:
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding=encoding)
    elif kind == "json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding=encoding)
    else:
        with open(path, "w", newline="", encoding=encoding) as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if kind == "tsv" else ",")
            w.writeheader()
            w.writerows(rows)
    return path


def task(path: Path, **extra) -> dict:
    return {"name": "t", "fields": ["text"], "label_field": "y", "train": {"path": str(path)},
            "split": {"seed": 0, "select": 6, "eval": 12}, **extra}


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "tsv"])
def test_every_format_reads_the_same_examples(tmp_path, kind):
    td = load_task(task(write(tmp_path / f"d.{kind}", ROWS, kind)), {})
    assert sorted(e.texts[0] for e in td.train_pool + td.select + td.eval) == sorted(r["text"] for r in ROWS)
    assert td.labels == ["mid", "neg", "pos"]  # inferred from the train pool, in sorted order
    assert td.info["labels_inferred"] and td.info["sizes"] == {"train_pool": 42, "select": 6, "eval": 12}


def test_iso_8859_1_file_needs_its_encoding_and_a_wrong_one_names_the_line(tmp_path):
    path = write(tmp_path / "latin.csv", ROWS, "csv", encoding="iso-8859-1")
    td = load_task(task(path, encoding="iso-8859-1"), {})
    assert any("é" in e.texts[0] for e in td.train_pool + td.eval + td.select)
    with pytest.raises(DataError, match=r"latin\.csv: line 2: byte 0xe9 is not valid utf-8"):
        load_task(task(path), {})


def test_same_seed_same_split_other_seed_other_split_and_stratified(tmp_path):
    path = write(tmp_path / "d.jsonl", ROWS, "jsonl")
    a, b = load_task(task(path), {}), load_task(task(path), {})
    c = load_task(task(path, split={"seed": 1, "select": 6, "eval": 12}), {})
    assert [e.idx for e in a.eval] == [e.idx for e in b.eval] != [e.idx for e in c.eval]
    assert a.info["label_counts"]["eval"] == {"mid": 4, "neg": 4, "pos": 4}
    assert a.info["split"] == {"seed": 0, "stratify": True, "select": 6, "eval": 12}
    assert len(a.info["files"][0]["sha256"]) == 64
    frac = load_task(task(path, split={"seed": 0, "select": 0.1, "eval": 0.25}), {})
    assert (len(frac.select), len(frac.eval)) == (4, 15)


def test_dedup_counts_duplicates_and_conflicts_and_keeps_them_out_of_eval(tmp_path):
    rows = ROWS + ROWS[:5] + [{"text": ROWS[6]["text"], "y": "pos"}]  # 5 exact, 1 with another label
    td = load_task(task(write(tmp_path / "d.jsonl", rows, "jsonl"), dedup=True), {})
    assert td.info["removed"]["duplicates"] == 6 and td.info["removed"]["duplicate_label_conflicts"] == 1
    assert "different labels" in td.info["warnings"][0]
    texts = [e.texts for e in td.train_pool + td.select + td.eval]
    assert len(texts) == len(set(texts)) == 60
    leaky = load_task(task(write(tmp_path / "e.jsonl", rows, "jsonl")), {})
    assert any("leak" in w for w in leaky.info["warnings"])


def test_filter_and_map_labels_merge_and_drop_classes(tmp_path):
    rows = [{**r, "lang": "en" if i % 4 else "de"} for i, r in enumerate(ROWS)]
    td = load_task(task(write(tmp_path / "d.jsonl", rows, "jsonl"), filter={"lang": ["en"]},
                        map_labels={"mid": None, "pos": "positive"}), {})
    assert td.labels == ["neg", "positive"]
    assert td.info["removed"]["filter"] == 15 and td.info["removed"]["map_labels"] == 15


def test_listed_labels_fix_the_class_order_and_a_label_outside_them_names_file_and_line(tmp_path):
    path = write(tmp_path / "d.tsv", ROWS, "tsv")
    assert load_task(task(path, labels=["pos", "neg", "mid"]), {}).labels == ["pos", "neg", "mid"]
    with pytest.raises(DataError, match=r"d\.tsv line 4: label 'mid' \(train split\) is not listed in `labels`"):
        load_task(task(path, labels=["pos", "neg"]), {})


def test_eval_file_label_absent_from_train_is_an_error(tmp_path):
    train = write(tmp_path / "train.jsonl", [r for r in ROWS if r["y"] != "mid"], "jsonl")
    write(tmp_path / "test.jsonl", ROWS, "jsonl")
    with pytest.raises(DataError, match=r"test\.jsonl line 3: label 'mid' \(eval split\) is not seen in the train"):
        load_task(task(train, eval={"path": "test.jsonl"}, root=str(tmp_path)), {})
    with pytest.raises(DataError, match=r"\['mid'\] occur in eval/select but not in the train pool"):
        load_task(task(train, eval={"path": "test.jsonl"}, root=str(tmp_path), labels=["mid", "neg", "pos"]), {})


@pytest.mark.parametrize(("change", "pattern"), [
    ({"train": {"path": "nope.csv"}}, r"file not found: .*nope\.csv"),
    ({"fields": ["txt"]}, r"d\.jsonl line 1: unknown field\(s\) \['txt'\]"),
    ({"split": {"seed": 0, "select": 6, "eval": 60}}, r"split\.eval=60 leaves no train pool"),
    ({"split": {"eval": 0}}, r"no `eval` split"),
    ({"fields": ["a", "b", "c"]}, r"`fields` must list 1 or 2"),
])
def test_bad_config_or_data_is_a_data_error_naming_it(tmp_path, change, pattern):
    path = write(tmp_path / "d.jsonl", ROWS, "jsonl")
    with pytest.raises(DataError, match=pattern):
        load_task({**task(path, root=str(tmp_path)), **change}, {})


def test_malformed_rows_name_their_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "y": "x"}\r\n{"text": "b", "y":\r\n')
    with pytest.raises(DataError, match=r"bad\.jsonl: line 2: malformed JSON"):
        load_task(task(tmp_path / "bad.jsonl"), {})
    (tmp_path / "bad.csv").write_text("text,y\na,x\nb,x,extra\n")
    with pytest.raises(DataError, match=r"bad\.csv: line 3: 3 fields, the header has 2"):
        load_task(task(tmp_path / "bad.csv"), {})


def test_hub_source_goes_through_load_dataset_and_maps_classlabel_names(tmp_path):
    """`source: hub` calls datasets.load_dataset(hub_id, hub_name, split=..., data_files=...): with the local parquet
    builder that is the very call a hub id makes, offline; a ClassLabel column comes back as its names."""
    import datasets

    feats = datasets.Features({"text": datasets.Value("string"), "y": datasets.ClassLabel(names=["neg", "pos"])})
    rows = [{"text": f"s {i}", "y": i % 2} for i in range(40)]
    datasets.Dataset.from_list(rows, features=feats).to_parquet(str(tmp_path / "d.parquet"))
    cfg = {"name": "h", "source": "hub", "hub_id": "parquet", "data_files": str(tmp_path / "d.parquet"),
           "fields": ["text"], "label_field": "y", "train": {"split": "train"}, "split": {"select": 4, "eval": 10}}
    td = load_task(cfg, {})
    assert td.labels == ["neg", "pos"] and td.info["source"] == "hub"
    assert td.info["sizes"] == {"train_pool": 26, "select": 4, "eval": 10}
    assert td.info["files"][0]["hub_id"] == "parquet" and td.info["files"][0]["records"] == 40
    with pytest.raises(DataError, match=r"could not load hub dataset 'no/such-dataset-anywhere'"):
        load_task({**cfg, "hub_id": "no/such-dataset-anywhere", "data_files": None}, {})


def test_baselines_are_train_pool_majority_chance_and_eval_majority():
    b = baselines([0, 1, 1, 2], [0, 0, 0, 1, 2], 3)  # pool majority: class 1; eval majority: class 0 (3/5)
    assert b["baseline_train_majority"] == pytest.approx(1 / 5)
    assert b["baseline_train_majority_f1_macro"] == pytest.approx((2 / 6) / 3)  # F1 of class 1: 2·1/(2+4+0)
    assert b["baseline_chance"] == pytest.approx(1 / 3) and b["baseline_eval_majority"] == pytest.approx(3 / 5)
    tie = baselines([0, 1, 1, 0], [1, 1, 0], 2)  # a tie in the pool breaks to the lowest class index, always
    assert tie["baseline_train_majority"] == pytest.approx(1 / 3)


def test_export_turns_hub_rows_back_into_the_local_schema_that_load_task_reads(tmp_path):
    """`make data` writes what data.source=local reads: the hub rows of RTE and MultiRC (as hub_to_examples takes
    them) round-trip through hub_rows_to_local and the local loader to the same Examples (the hub itself is offline)."""
    from omegaconf import OmegaConf

    from gradft import CONF_DIR
    from gradft.data import hub_to_examples
    from gradft.data.export import hub_rows_to_local
    from gradft.data.superglue import _load_local

    rte = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "task" / "rte.yaml"))
    mrc = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "task" / "multirc.yaml"))
    hub = {"rte": [{"premise": f"p{i}", "hypothesis": f"h{i}", "idx": i, "label": i % 2} for i in range(4)],
           "multirc": [{"paragraph": "P", "question": f"q{q}", "answer": f"a{a}", "label": (q + a) % 2,
                        "idx": {"paragraph": 0, "question": q, "answer": a}} for q in range(2) for a in range(3)]}
    for task in (rte, mrc):
        path = tmp_path / task["dir"] / "val.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in hub_rows_to_local(hub[task["name"]], task)))
        local = _load_local(task, {"superglue_root": str(tmp_path)}, {"root": "superglue", "split": "val"})
        assert local == hub_to_examples(hub[task["name"]], task)


def test_source_auto_reads_local_files_when_they_exist_else_the_hub_else_names_both(tmp_path):
    from conftest import make_cfg
    from omegaconf import OmegaConf

    cfg = make_cfg("task=cb")
    assert cfg.data.source == "auto"
    td = load_task(cfg.task, cfg.data)
    assert td.info["source"] == "local" and len(td.eval) == 56 and len(td.info["files"][0]["sha256"]) == 64
    data = OmegaConf.merge(cfg.data, {"superglue_root": str(tmp_path / "none"), "hub_id": "no/such-hub-dataset"})
    with pytest.raises(DataError, match=r"no data\. Local: data root not found: looked for .*none.*Hub: could not "
                                        r"load hub dataset 'no/such-hub-dataset'"):
        load_task(cfg.task, data)

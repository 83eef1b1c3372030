"""The carved selection split (``data.select=pool``, gradft/data/selection.py) on the real task files: disjoint from
eval and from every draw of shots, the same for every run seed, sized by its rule and recorded; refused where the pool
is only FewGLUE's 32; and the config keys of committed results unchanged by the new options at their defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import make_cfg
from omegaconf import OmegaConf

from gradft import data as gdata
from gradft.experiments import grid
from gradft.experiments.launch import compose_run
from gradft.tracking import config_key

ROOT = Path(__file__).resolve().parent.parent
CELL = ROOT / "results" / "minilm" / "table1_minilm" / "cb" / "lora" / "k32" / "s100"


def _load(task: str, *overrides: str) -> gdata.TaskData:
    cfg = make_cfg(f"task={task}", *overrides)
    return gdata.load_task(cfg.task, cfg.data)


def _key(ex: gdata.Example) -> tuple:
    return ex.texts, ex.choices, ex.label


@pytest.mark.parametrize("task", ["promise_nfr", "cb"])  # a table task (carved eval) and SuperGLUE (official val)
def test_carved_selection_is_disjoint_from_eval_and_from_every_shot_draw(task):
    td = _load(task, "data.select=pool")
    select = {_key(e) for e in td.select}
    assert len(td.select) == td.info["select_split"]["select"] > 32
    assert not select & {_key(e) for e in td.eval}
    assert not select & {_key(e) for e in td.train_pool}
    for k in (16, 32, 64):
        for seed in range(4):
            shots = gdata.sample_shots(td.train_pool, k, seed)
            assert not select & {_key(e) for e in shots}, (k, seed)
    # the pool it was carved from: nothing lost, nothing added
    default = _load(task)
    assert sorted(map(_key, td.select + td.train_pool)) == sorted(map(_key, default.train_pool))


def test_carved_selection_is_the_same_for_every_run_seed_and_shot_count():
    runs = [("seed=0", "data_seed=0", "shots=32"), ("seed=3", "data_seed=7", "shots=16"), ("seed=100", "data_seed=101",
                                                                                          "shots=64")]
    selects = [[e.idx for e in _load("unfair_tos", "data.select=pool", *r).select] for r in runs]
    assert selects[0] == selects[1] == selects[2]


def test_carved_selection_size_follows_its_rule_and_is_recorded():
    big = _load("rte", "data.select=pool")  # pool 2458: data.select_size caps it
    info = big.info["select_split"]
    assert (info["select"], info["select_size"], info["seed"], info["pool_units"]) == (500, 500, 0, 2458)
    assert big.info["sizes"]["select"] == 500 and big.info["sizes"]["train_pool"] == 1958
    assert sum(info["label_counts"].values()) == 500 and set(info["label_counts"]) == {"entailment", "not_entailment"}
    small = _load("cb", "data.select=pool", "data.select_size=400")  # pool 218: half of it
    assert len(small.select) == 109 and len(small.train_pool) == 109
    counts = small.info["select_split"]["label_counts"]  # stratified: 98 / 106 / 14 in the pool -> about half each
    assert abs(counts["entailment"] - 49) <= 1 and abs(counts["neutral"] - 7) <= 1


@pytest.mark.parametrize("task", ["boolq", "multirc"])
def test_a_pool_of_only_fewglue_examples_cannot_give_a_larger_selection_split(task):
    with pytest.raises(gdata.DataError, match="cannot apply.*FewGLUE"):
        _load(task, "data.select=pool")
    assert len(_load(task).select) > 0  # data.select=task (the default) still works


def test_default_config_keys_are_unchanged_by_the_new_options():
    """A committed baseline cell is still done for its grid (the key recomputed from its config.yaml, which predates
    the options, equals the key of today's composed config, which holds them at their defaults); the options only
    enter the key off their defaults."""
    p = grid.plan("table1_minilm", ["task=cb", "method=lora", "seed=100"], out=ROOT / "results" / "minilm")
    (cell,) = p.cells
    assert (cell.task, cell.method, cell.shots, cell.seed) == ("cb", "lora", 32, 100) and p.is_done(cell)
    composed = OmegaConf.to_container(compose_run([*p.cell_overrides(cell), "paths.output_dir=."]), resolve=True)
    assert (composed["data"]["select"], composed["trainer"]["stop"]) == ("task", "fixed")
    stored = config_key(yaml.safe_load((CELL / "config.yaml").read_text()))
    assert config_key(composed) == stored
    size = json.loads(json.dumps(composed))
    size["data"]["select_size"], size["trainer"]["patience"] = 123, 7  # read only with select=pool / stop=early
    assert config_key(size) == stored
    pool, early = json.loads(json.dumps(size)), json.loads(json.dumps(size))
    pool["data"]["select"], early["trainer"]["stop"] = "pool", "early"
    keys = {config_key(pool), config_key(early)}
    assert stored not in keys and len(keys) == 2
    pool500 = json.loads(json.dumps(pool))
    pool500["data"]["select_size"] = 500
    assert config_key(pool500) != config_key(pool)  # with data.select=pool its size is part of the key

"""``gradft.bench.step`` end to end on the tiny model: the json has every key as a finite positive number, and the
counted passes are what each step really does (LoRA 1 fwd/1 bwd, forward difference 2/2, central 3/3, sub-batch 3/3
calls over 1.25 batches of FLOPs, exact 1/2); ``gradft.bench.cell``'s profile; ``gradft.bench.hvp``'s errors."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from gradft import CONF_DIR
from gradft.bench.step import RATIOS, TARGETS, VARIANTS, main

POSITIVE = ("median_s", "min_s", "max_s", "cpu_median_s", "flops_per_step", "gflop_per_step", "gflops", "gemm_fraction",
            "trainable_params", "fwd_per_step", "bwd_per_step")
# RSS growth while a variant is built: the tiny model's state is well under 1 MiB, so the allocator handing pages back
# can make it slightly negative (ours_fd: -0.10 MiB once); finite and above -1 MiB here, MiBs on a real model
RSS_DELTAS = ("state_mb", "peak_mb")
# measured passes per optimisation step: (forward, backward)
# (sub_batch: three calls — m examples, the other b − m, m again shifted — over 1 + m/b batches of FLOPs)
PASSES = {"full": (1, 1), "adapter": (1, 1), "lora": (1, 1), "prompt": (1, 1), "plain_lora": (1, 1),
          "ours_fd": (2, 2), "ours_central": (3, 3), "ours_sub": (3, 3), "ours_exact": (1, 2), "ours_update": (1, 1)}
STRUCTURED = yaml.safe_load((CONF_DIR / "guidance" / "structured.yaml").read_text())
DEFAULT_HVP = {"finite_difference": "ours_fd", "central": "ours_central", "sub_batch": "ours_sub",
               "double_backward": "ours_exact"}[STRUCTURED["hvp"]]


def positive(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    # 1 thread: 2 OpenMP threads on a shared 2-core machine can stall for seconds per step
    returned = main(["--model", "tiny_bert", "--steps", "2", "--warmup", "2", "--seq", "32", "--gemm", "128",
                     "--threads", "1", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data == returned
    return data


def test_every_key_is_finite_positive(report):
    for key in RATIOS:  # ratio of medians, median of per-round ratios, ratio of CPU-time medians
        assert all(positive(x) for x in (report[key], report["ratios_paired"][key], report["ratios_cpu"][key])), key
    assert positive(report["threads"]) and report["rounds"] == 2
    assert positive(report["gemm"]["gflops"])
    assert report["model"] == "tiny_bert" and report["batch"]["size"] == 8 and report["batch"]["seq_len"] == 32
    assert report["torch"] and report["memory_measure"] and report["flops_measure"]
    assert set(report["variants"]) == set(VARIANTS)
    for name, row in report["variants"].items():
        for key in POSITIVE:
            assert positive(row[key]), (name, key, row[key])
        assert all(math.isfinite(row[key]) and row[key] > -1 for key in RSS_DELTAS), (name, row)
        assert row["step_mb"] >= 0 and len(row["times_s"]) == 2
        assert report["median_s"][name] == row["median_s"]
    for key, limit in TARGETS.items():
        t = report["targets"][key]
        assert t["max"] == limit and t["value"] == report[key] and t["pass"] == (report[key] <= limit)
        assert isinstance(t["consistent"], bool)


def test_counted_passes(report):
    for name, (fwd, bwd) in PASSES.items():
        row = report["variants"][name]
        assert (row["fwd_per_step"], row["bwd_per_step"]) == (fwd, bwd), name


def test_guided_step_counts_more_flops_than_plain(report):
    v = report["variants"]
    lora = v["lora"]["flops_per_step"]
    # a forward-difference guided step is two plain LoRA steps' passes: FLOPs double (up to the optimizer's few);
    # central three; sub-batch (m = 2 of 8) 1 + 2/8
    assert v["ours_fd"]["flops_per_step"] == pytest.approx(2 * lora, rel=0.02)
    assert v["ours_central"]["flops_per_step"] == pytest.approx(3 * lora, rel=0.02)
    assert v["ours_sub"]["flops_per_step"] == pytest.approx(1.25 * lora, rel=0.03)
    assert v["full"]["flops_per_step"] > lora
    assert v["ours_update"]["flops_per_step"] == pytest.approx(lora, rel=0.01)  # the update reading: no extra pass
    assert v["ours_exact"]["flops_per_step"] > v["ours_fd"]["flops_per_step"]
    assert v["ours"]["flops_per_step"] == pytest.approx(v[DEFAULT_HVP]["flops_per_step"], rel=1e-6)
    # every=4: one guided step in four plain ones
    assert v["ours_every4"]["flops_per_step"] == pytest.approx((3 * lora + v["ours"]["flops_per_step"]) / 4, rel=0.02)


def test_unknown_variant_is_refused():
    with pytest.raises(SystemExit):
        main(["--variants", "lora,nope"])


def test_prefix_reuse_bench_scores_the_same_tokens_and_computes_fewer(tmp_path):
    from gradft.bench.scoring import main as bench_scoring

    out = tmp_path / "scoring.json"
    data = bench_scoring(["--model", "tiny_llama", "--examples", "8", "--batch", "4", "--rounds", "1",
                          "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == data
    full, reuse = data["modes"]["no_reuse"], data["modes"]["reuse"]
    assert full["tokens_scored"] == reuse["tokens_scored"] > 0  # the same candidate tokens in both modes
    assert reuse["tokens_computed"] < full["tokens_computed"]  # each prompt once instead of twice
    assert data["max_abs_score_diff"] < 1e-4
    for d in (full, reuse):
        assert all(positive(d[k]) for k in ("eval_tokens_scored_per_s", "train_tokens_scored_per_s"))
    assert positive(data["speedup_eval"]) and positive(data["speedup_train"])


@pytest.mark.parametrize("model,head", [("tiny_bert", "classifier"), ("tiny_llama", "lm")])
def test_cell_profile_splits_the_whole_wall_time_and_the_plain_twin_does_the_same_work(tmp_path, model, head):
    from gradft.bench.cell import main as cell_main

    out = tmp_path / "cell.json"
    r = cell_main(["--model", model, "--threads", "1", "--out", str(out), "--overrides", "trainer.steps=4",
                   "metrics.every=2", "eval.max_examples=24", f"head={head}"])
    prof = r["gradft"]["profile"]
    assert {"data", "model_load", "d_task", "steps", "metric_passes", "eval"} <= set(prof)
    assert all(v >= 0 for v in prof.values())
    # the phases (with "other" and the checks/writing around the run) add up to the wall time the caller's clock saw
    assert sum(prof.values()) == pytest.approx(r["gradft"]["wall_s"], rel=1e-6)
    assert r["gradft"]["steps"] == r["plain"]["steps"] == 4
    assert r["ratio_cell_plain"] > 0 and json.loads(out.read_text())["plain"]["steps"] == 4
    assert 0 <= r["plain"]["accuracy"] <= 1 and r["plain"]["eval_s"] > 0  # the twin scored the 24 examples too


def test_gradient_metrics_off_skip_d_task_and_every_metric_pass(tmp_path):
    from gradft.bench.cell import main as cell_main

    r = cell_main(["--model", "tiny_bert", "--threads", "1", "--no-plain", "--out", str(tmp_path / "c.json"),
                   "--overrides", "trainer.steps=2", "metrics.every=0", "eval.max_examples=8"])
    assert "metric_passes" not in r["gradft"]["profile"] and "d_task" not in r["gradft"]["profile"]

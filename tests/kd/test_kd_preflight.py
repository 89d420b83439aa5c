"""Preflight: tokenizer and vocabulary compatibility, memory estimate."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer, LlamaForCausalLM

from stepdistill.errors import ConfigError
from stepdistill.kd.preflight import check_models, check_tokenizers, estimate_memory, preflight


def test_same_tokenizer_passes(smol_tokenizer):
    findings = check_tokenizers(smol_tokenizer, smol_tokenizer)
    assert [f for f in findings if f.level == "error"] == []
    preflight(smol_tokenizer, smol_tokenizer).raise_for_errors()


def test_vocab_mismatch_is_caught(smol_tokenizer_dir, smol_tokenizer):
    student_tok = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    student_tok.add_tokens(["<extra_tool_token>"])
    report = preflight(smol_tokenizer, student_tok)
    assert [f.check for f in report.errors] == ["vocab"]
    with pytest.raises(ConfigError, match="vocabulary sizes differ: teacher 49152, student 49153"):
        report.raise_for_errors()


def test_special_token_and_probe_mismatch(smol_tokenizer_dir, smol_tokenizer):
    other = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    other.eos_token = "<|endoftext|>"
    other.chat_template = None
    findings = check_tokenizers(smol_tokenizer, other, probe="x<|endoftext|>")
    by_check = {f.check: f for f in findings}
    assert by_check["special_tokens"].level == "error" and "eos_token" in by_check["special_tokens"].message
    assert by_check["chat_template"].message == "only the teacher has a chat template"


def test_model_vocab_mismatch_and_memory_error(smol_tokenizer, make_llama_config):
    def _tiny(vocab: int) -> LlamaForCausalLM:
        return LlamaForCausalLM(make_llama_config(vocab))

    big, small = _tiny(128), _tiny(96)
    assert check_models(big, small)[0].message == "output vocabularies differ: teacher 128 logits, student 96"
    report = preflight(
        smol_tokenizer, smol_tokenizer, _tiny(128), _tiny(128), batch_tokens=10, available=1000
    )
    assert [f.check for f in report.errors] == ["memory"]
    assert report.memory.total > 1000
    with pytest.raises(ConfigError, match="teacher \\+ student need ~"):
        report.raise_for_errors()


def test_memory_estimate_arithmetic():
    m = estimate_memory(
        teacher_params=1000,
        student_params=100,
        batch_tokens=10,
        hidden=8,
        layers=2,
        vocab=50,
        teacher_dtype="bf16",
        student_dtype="fp32",
        trainable_params=40,
    )
    assert (m.teacher_weights, m.student_weights, m.student_grads, m.optimizer_state) == (2000, 400, 160, 320)
    assert m.activations == 10 * 8 * 2 * 16 * 4 + 10 * 50 * 4 * 3
    assert m.total == 2000 + 400 + 160 + 320 + m.activations
    assert m.describe().startswith("~0.00 GiB (teacher weights 0.00")

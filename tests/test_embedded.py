"""resolve_model: the embedded SmolLM2 name becomes its converted folder (or its GGUF file when one is
named); other names pass through. The converted folder holds exactly the GGUF's model and tokenizer."""

from __future__ import annotations

import pytest
import torch

from stepdistill.embedded import (
    GGUF_NAME,
    cache_dir,
    convert_gguf,
    converted_dir,
    resolve_model,
    smollm2_dir,
    smollm2_gguf,
)


def test_embedded_name_resolves_to_the_converted_folder():
    folder, gguf = resolve_model("embedded:smollm2", None)
    assert gguf is None and folder == str(converted_dir(smollm2_gguf()))
    files = {p.name for p in converted_dir(smollm2_gguf()).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert not any(name.endswith((".bin", ".gguf")) for name in files)


@pytest.mark.slow
def test_converted_folder_is_the_gguf_model_and_tokenizer():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, _ = resolve_model("embedded:smollm2", None)
    plain = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
    gguf = AutoModelForCausalLM.from_pretrained(str(smollm2_dir()), gguf_file=GGUF_NAME, dtype=torch.float32)
    want = gguf.state_dict()
    got = plain.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    texts = ["Q: Jack has 3 apples and eats 1. How many are left?\nA: 3 - 1 = 2", "émoji 🙂 and  spaces\t"]
    tok_plain = AutoTokenizer.from_pretrained(folder)
    tok_gguf = AutoTokenizer.from_pretrained(str(smollm2_dir()), gguf_file=GGUF_NAME)
    assert [tok_plain(t)["input_ids"] for t in texts] == [tok_gguf(t)["input_ids"] for t in texts]
    assert (tok_plain.eos_token, tok_plain.chat_template) == (tok_gguf.eos_token, tok_gguf.chat_template)


def test_a_complete_folder_is_not_converted_again(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text("{}")
    assert convert_gguf(tmp_path / "missing.gguf", out) == out  # never reads the (absent) file


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STEPDISTILL_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("STEPDISTILL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "stepdistill"


def test_explicit_gguf_file_is_kept_for_the_embedded_folder():
    assert resolve_model("embedded:smollm2", "other.gguf") == (str(smollm2_dir()), "other.gguf")


def test_other_names_pass_through_unchanged():
    assert resolve_model("google/t5-v1_1-base", None) == ("google/t5-v1_1-base", None)
    assert resolve_model("/models/x", "m.Q4.gguf") == ("/models/x", "m.Q4.gguf")
    # The short alias is the hf_local teacher's own convenience, not a student/KD model name.
    assert resolve_model("smollm2", None) == ("smollm2", None)

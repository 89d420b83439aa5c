"""resolve_model: the embedded SmolLM2 name becomes its folder and GGUF file; other names pass through."""

from __future__ import annotations

from stepdistill.embedded import GGUF_NAME, resolve_model, smollm2_dir


def test_embedded_name_resolves_to_the_shipped_gguf():
    folder, gguf = resolve_model("embedded:smollm2", None)
    assert (folder, gguf) == (str(smollm2_dir()), GGUF_NAME)
    assert (smollm2_dir() / GGUF_NAME).is_file()


def test_explicit_gguf_file_is_kept_for_the_embedded_folder():
    assert resolve_model("embedded:smollm2", "other.gguf") == (str(smollm2_dir()), "other.gguf")


def test_other_names_pass_through_unchanged():
    assert resolve_model("google/t5-v1_1-base", None) == ("google/t5-v1_1-base", None)
    assert resolve_model("/models/x", "m.Q4.gguf") == ("/models/x", "m.Q4.gguf")
    # The short alias is the hf_local teacher's own convenience, not a student/KD model name.
    assert resolve_model("smollm2", None) == ("smollm2", None)

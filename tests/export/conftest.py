"""A tiny trained student and its export, shared by the export tests.

The student is the tests' 2-layer Llama decoder (SmolLM2's tokenizer, random start) trained by
`stepdistill train` on demo arithmetic problems with gold labels until it has learned its training
rows by heart; the test split holds 12 of those rows and 12 problems it never saw, so it gets some
test rows right and some wrong, and the exported files have real predictions to agree with.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from stepdistill.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exportkit import HAVE_LLAMA, write_run_config  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smol_tokenizer, make_llama_config) -> Path:
    """A 2-layer Llama decoder, hidden 64, random weights, with SmolLM2's tokenizer."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    cfg = make_llama_config(
        len(smol_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        bos_token_id=smol_tokenizer.bos_token_id,
        eos_token_id=smol_tokenizer.eos_token_id,
        pad_token_id=smol_tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    path = tmp_path_factory.mktemp("tiny-llama-64")
    LlamaForCausalLM(cfg).save_pretrained(path)
    smol_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_llama_dir) -> Path:
    """The trained tiny student's run folder (metrics.json, best/, predictions/test.jsonl)."""
    folder = tmp_path_factory.mktemp("export-run")
    assert main(["train", str(write_run_config(folder, tiny_llama_dir))]) == 0
    return folder / "runs" / "tiny"


@pytest.fixture(scope="session")
def exported(trained_run) -> dict:
    """`stepdistill export RUN` with the default formats (f16, q8_0, q4_k_m): its deploy.json."""
    if not HAVE_LLAMA:
        pytest.skip("llama-cpp-python is not installed: `make test` or `make setup-server` builds it")
    assert main(["export", str(trained_run)]) == 0
    return json.loads((trained_run / "export" / "deploy.json").read_text())

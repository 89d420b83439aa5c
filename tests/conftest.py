"""Shared fixtures: the real SmolLM2 tokenizer (from the offline GGUF) and tiny models built from configs.

Tiny models share SmolLM2's 49,152-token vocabulary so that tests exercise a real tokenizer; with
d_model 32 they have ~1.6M parameters and a training step takes milliseconds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config):
    """Every test process computes on one torch thread: the tests' models are tiny (threads only
    add contention), `make test` runs two test processes on two cores, and a result never depends
    on which tests ran before in the same process."""
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """The files with a test marked `slow` run first, in collection order, then the others: `make
    test` gives each file whole to whichever test process is free (pytest-xdist's loadfile, files in
    this order), so the long files start early and the many short ones fill in at the end, rather
    than a long file starting last while the other process has nothing left. A file stays whole in
    one process because its tests share module and session fixtures (a trained and exported
    student, a llama.cpp server)."""
    slow = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The reference data with PaLM 540B outputs (../shared/data); tests skip where it is absent."""
    if not SHARED_DATA.exists():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smol_tokenizer_dir() -> Path:
    """The SmolLM2 tokenizer's folder: the embedded model's converted folder (stepdistill.embedded;
    converted from the GGUF once per machine, then cached on disk)."""
    from stepdistill.embedded import smollm2_converted

    return smollm2_converted()


@pytest.fixture(scope="session")
def smol_tokenizer(smol_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smol_tokenizer_dir)


def _save_tiny(model, tokenizer, path: Path) -> Path:
    model.save_pretrained(path)  # safetensors
    tokenizer.save_pretrained(path)
    return path


def tiny_llama_config(vocab_size: int, **overrides: Any):
    """The config of the tests' tiny Llama decoder (2 layers, hidden 32, 4 heads / 2 key-value heads);
    `overrides` replace or add LlamaConfig fields."""
    from transformers import LlamaConfig

    fields: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
    }
    return LlamaConfig(**{**fields, **overrides})


@pytest.fixture(scope="session")
def make_llama_config():
    """tiny_llama_config(vocab_size, **overrides) -> LlamaConfig, for tests that build their own models."""
    return tiny_llama_config


@pytest.fixture(scope="session")
def tiny_causal_dir(tmp_path_factory, smol_tokenizer) -> Path:
    """A 2-layer Llama-architecture decoder (SmolLM2's architecture) with random weights, on disk."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    cfg = tiny_llama_config(
        len(smol_tokenizer),
        bos_token_id=smol_tokenizer.bos_token_id,
        eos_token_id=smol_tokenizer.eos_token_id,
        pad_token_id=smol_tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return _save_tiny(LlamaForCausalLM(cfg), smol_tokenizer, tmp_path_factory.mktemp("tiny-causal"))


@pytest.fixture(scope="session")
def tiny_seq2seq_dir(tmp_path_factory, smol_tokenizer) -> Path:
    """A 2-layer T5 (v1.1 style, gated-gelu) with random weights, on disk."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=len(smol_tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        pad_token_id=smol_tokenizer.pad_token_id,
        eos_token_id=smol_tokenizer.eos_token_id,
        decoder_start_token_id=smol_tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return _save_tiny(T5ForConditionalGeneration(cfg), smol_tokenizer, tmp_path_factory.mktemp("tiny-t5"))


def _memorise(student, source: str, target: str, steps: int = 60) -> None:
    """Fit a tiny decoder to one (source, target) sequence so its greedy output is known."""
    import torch

    from stepdistill.training.batching import encode_source, encode_target
    from stepdistill.training.config import TrainConfig

    tok, cfg = student.tokenizer, TrainConfig()
    src, tgt = encode_source(tok, source, cfg, "causal"), encode_target(tok, target, cfg)
    ids = torch.tensor([src + tgt])
    labels = torch.tensor([[-100] * len(src) + tgt])
    opt = torch.optim.Adam(student.model.parameters(), lr=1e-2)
    student.model.train()
    for _ in range(steps):
        loss = student.model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()


@pytest.fixture
def memorise():
    """memorise(student, source, target): fit a tiny decoder to one sequence (its output is then known)."""
    return _memorise


def _one_step(model, kind: str, encoded, tc, pad_id: int, kd_term=None, alpha: float | None = None,
              one_pass: bool = False):  # fmt: skip
    """One optimizer step's forward and backward over all of `encoded` on the trainer's own path
    (StepStream -> loop._forward_backward -> Objective -> loss_terms), in the model's current mode
    (eval(): no dropout); `one_pass` keeps all rows in one forward pass. Gradients are left in `.grad`; returns (logged terms, the step's counts)."""
    from stepdistill.training.batching import StepStream
    from stepdistill.training.device import make_accelerator
    from stepdistill.training.loop import _forward_backward
    from stepdistill.training.step import Objective, loss_terms, step_weights

    one = tc.model_copy(update={"batch_size": len(encoded), "grad_accum": 1})
    stream = StepStream(encoded, one, pad_id, kind, one_pass=one_pass or kd_term is not None)
    plan = stream[0]
    objective = Objective(model, kind, kd_term, tc.loss_chunk_tokens)
    alpha = tc.alpha if alpha is None else alpha
    keys = objective.sum_keys()
    accelerator = make_accelerator("fp32", 60)
    sums = _forward_backward(accelerator, objective, plan, step_weights(tc.method, alpha, plan.counts), keys,
                             tc.seed, 0)  # fmt: skip
    terms = loss_terms(dict(zip(keys, sums.double().tolist())), plan.counts, tc.method, alpha, 1, kd_term)
    return terms, plan.counts


@pytest.fixture
def one_step():
    """one_step(model, kind, encoded, tc, pad_id, kd_term=None) -> (terms, counts): the loss terms
    of one real training step over `encoded` (gradients left in .grad)."""
    return _one_step

"""Fixtures shared by the soft-target tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_causal_dir):
    """The tiny decoder with perturbed, sharper weights: a teacher that differs from the student."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        model.get_input_embeddings().weight.mul_(4.0)  # tied: sharper output distribution
    out = tmp_path_factory.mktemp("teacher")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_causal_dir).save_pretrained(out)
    return out

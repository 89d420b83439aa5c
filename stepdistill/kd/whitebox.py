"""White-box teacher: a local transformers model sharing the student's tokenizer.

It reads the same padded tensors the student trains on (input_ids, attention_mask, labels with -100
where no loss; causal: labels aligned with input_ids, seq2seq: labels are the decoder targets) and
returns its logits at every target token, flattened in row-major order of the target positions --
the same order as the trainer's student logits at targets. It runs without gradients in eval mode,
on its own device if asked (outputs come back to the caller's device).

Use it online (a term in each training step) or once, to precompute a top-k file (kd/topk.py) that
many students reuse without loading the teacher again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from stepdistill.errors import ConfigError
from stepdistill.kd.topk import SparseTargets, write_topk
from stepdistill.training.batching import IGNORE

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_teacher(
    path: str,
    gguf_file: str | None = None,
    device: str | torch.device = "cpu",
    dtype: str = "auto",
    trust_remote_code: bool = False,
) -> tuple[Any, str]:
    """Load a teacher model (eval mode, frozen) and its kind ("causal" or "seq2seq")."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    if dtype != "auto" and dtype not in _DTYPES:
        raise ConfigError(f"kd.teacher_dtype: '{dtype}' is not one of auto, {', '.join(_DTYPES)}")
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    if dtype != "auto":
        kwargs["dtype"] = _DTYPES[dtype]
    try:
        config = AutoConfig.from_pretrained(path, **{k: v for k, v in kwargs.items() if k != "dtype"})
    except (OSError, ValueError) as err:
        raise ConfigError(f"kd.teacher_model: cannot load '{path}': {err}") from None
    kind = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
    cls = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
    safe = {} if gguf_file else {"use_safetensors": True}  # never unpickle weights
    model = cls.from_pretrained(path, **kwargs, **safe)
    return freeze(model).to(device), kind


def freeze(model: Any) -> Any:
    """Eval mode and no gradients: the teacher is a fixed target."""
    model.eval()
    model.requires_grad_(False)
    return model


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def teacher_target_logits(
    teacher: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, kind: str
) -> torch.Tensor:
    """Teacher logits [n_targets, vocab] (float32) at the target tokens of a padded batch.

    Row-major over (row, position) of the target tokens; returned on the device of `input_ids`.
    """
    out_device = input_ids.device
    dev = model_device(teacher)
    input_ids, attention_mask, labels = input_ids.to(dev), attention_mask.to(dev), labels.to(dev)
    if kind == "causal":
        logits = teacher(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
        labels = labels[:, 1:]  # position t predicts token t + 1
    elif kind == "seq2seq":
        decoder_ids = teacher.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = teacher(
            input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_ids
        ).logits
    else:
        raise ValueError(f"unknown model kind '{kind}' (allowed: causal, seq2seq)")
    rows, pos = (labels != IGNORE).nonzero(as_tuple=True)
    return logits[rows, pos].float().to(out_device)


def topk_from_logits(logits: torch.Tensor, k: int) -> SparseTargets:
    """The k most probable tokens and their log-probs (normalised over the full vocabulary)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    values, ids = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)
    return SparseTargets(ids, values)


def precompute_topk(
    teacher: Any,
    kind: str,
    batches: Iterable[tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]],
    path: str | os.PathLike,
    k: int = 20,
    meta: dict[str, str] | None = None,
) -> int:
    """Run the teacher over (keys, input_ids, attention_mask, labels) batches -- one key per row --
    and write each row's top-k targets to a top-k file. Returns the number of keys written."""
    targets: dict[str, SparseTargets] = {}
    for keys, input_ids, attention_mask, labels in batches:
        logits = teacher_target_logits(teacher, input_ids, attention_mask, labels, kind)
        sparse = topk_from_logits(logits, k)
        shifted = labels[:, 1:] if kind == "causal" else labels
        counts = (shifted != IGNORE).sum(-1).tolist()  # target tokens per row, in order
        if len(keys) != len(counts):
            raise ValueError(f"{len(keys)} keys for a batch of {len(counts)} rows")
        start = 0
        for key, n in zip(keys, counts):
            if key in targets:
                raise ValueError(f"duplicate top-k key '{key}'")
            targets[key] = SparseTargets(
                sparse.ids[start : start + n].cpu(), sparse.logprobs[start : start + n].cpu()
            )
            start += n
    info = {"teacher": str(getattr(teacher.config, "_name_or_path", "")), "kind": kind}
    info.update(meta or {})
    write_topk(Path(path), targets, info)
    return len(targets)

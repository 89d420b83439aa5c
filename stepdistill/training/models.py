"""Load the student: a hub id, a local folder, a GGUF file or a fresh random model, optionally
shrunk by keeping some decoder layers and wrapped with LoRA.

    student = load_student(StudentConfig(model="google/t5-v1_1-base"))
    student = load_student(StudentConfig(model="embedded:smollm2"))   # offline SmolLM2-135M GGUF

`save_student` writes a folder that plain `AutoModelFor*.from_pretrained` + `AutoTokenizer` load:
LoRA adapters are merged into a copy of the model first, so the training model keeps its adapters.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from stepdistill.embedded import plain_copy, resolve_model
from stepdistill.errors import ConfigError
from stepdistill.training.config import StudentConfig


@dataclass
class Student:
    """A loaded student. `n_params` counts the weights of the (merged) model, not LoRA adapters."""

    model: Any  # a transformers PreTrainedModel, or a peft PeftModel wrapping one
    tokenizer: Any
    kind: Literal["seq2seq", "causal"]
    n_params: int
    name: str

    @property
    def is_lora(self) -> bool:
        return hasattr(self.model, "peft_config")

    @property
    def base(self) -> Any:
        """The transformers model underneath (LoRA layers injected in place when LoRA is on)."""
        return self.model.get_base_model() if self.is_lora else self.model


def _auto_classes(kind: str):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM


def _load_config(cfg: StudentConfig, src: str, gguf: str | None):
    from transformers import AutoConfig

    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    if gguf:
        kwargs["gguf_file"] = gguf
    try:
        config = AutoConfig.from_pretrained(src, **kwargs)
    except (OSError, ValueError) as err:
        raise ConfigError(f"student.model: cannot load a model config from '{src}': {err}") from None
    for key, value in cfg.config_overrides.items():
        if not hasattr(config, key):
            raise ConfigError(f"student.config_overrides.{key}: {type(config).__name__} has no such field")
        setattr(config, key, value)
    return config


def _decoder_layers(model) -> torch.nn.ModuleList:
    """The list of decoder blocks of a causal LM (`model.model.layers` for Llama-style models)."""
    decoder = model.get_decoder()
    for name in ("layers", "h", "blocks"):
        layers = getattr(decoder, name, None)
        if isinstance(layers, torch.nn.ModuleList):
            return layers
    raise ConfigError(f"student.keep_layers: cannot find the decoder layers of {type(model).__name__}")


def keep_decoder_layers(model, keep: list[int]) -> None:
    """Shrink a causal LM in place to the listed layers (weights shared, not re-initialised).

    The config and each attention module's `layer_idx` are renumbered so that the result saves and
    loads with plain from_pretrained and its KV cache indexes the new layers.
    """
    layers = _decoder_layers(model)
    n = len(layers)
    if not keep or any(i < 0 or i >= n for i in keep) or list(keep) != sorted(set(keep)):
        raise ConfigError(
            f"student.keep_layers: expected increasing distinct indices in 0..{n - 1}, got {keep}"
        )
    kept = torch.nn.ModuleList([layers[i] for i in keep])
    for new_idx, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    decoder = model.get_decoder()
    for name in ("layers", "h", "blocks"):
        if getattr(decoder, name, None) is layers:
            setattr(decoder, name, kept)
    model.config.num_hidden_layers = len(keep)
    # Models with per-layer attention types (sliding/full) keep the entries of the kept layers.
    layer_types = getattr(model.config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == n:
        model.config.layer_types = [layer_types[i] for i in keep]


def _load_tokenizer(cfg: StudentConfig, src: str, gguf: str | None, kind: str):
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.tokenizer is None and gguf:
        kwargs["gguf_file"] = gguf
    tok = AutoTokenizer.from_pretrained(cfg.tokenizer or src, **kwargs)
    if tok.pad_token is None:
        # Causal students: padding is masked out, so the EOS token serves; it is never a target there.
        fallback = tok.eos_token if kind == "causal" else (tok.unk_token or tok.eos_token)
        if fallback is None:
            raise ConfigError(
                f"student.tokenizer: '{cfg.tokenizer or src}' has neither a pad nor an eos token"
            )
        tok.pad_token = fallback
    return tok


def load_tokenizer(cfg: StudentConfig):
    """The student's tokenizer alone: data checks run with it before any weights load."""
    src, gguf = resolve_model(cfg.model, cfg.gguf_file)
    kind = cfg.kind
    if kind == "auto":
        kind = "seq2seq" if getattr(_load_config(cfg, src, gguf), "is_encoder_decoder", False) else "causal"
    return _load_tokenizer(cfg, src, gguf, kind)


def _apply_lora(model, cfg: StudentConfig, kind: str):
    try:
        from peft import LoraConfig, TaskType, get_peft_model
    except ImportError:
        raise ConfigError("student.lora needs peft: pip install 'stepdistill[lora]'") from None
    lcfg = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        task_type=TaskType.SEQ_2_SEQ_LM if kind == "seq2seq" else TaskType.CAUSAL_LM,
    )
    return get_peft_model(model, lcfg)


def load_student(cfg: StudentConfig, seed: int | None = None) -> Student:
    """Build the student described by `cfg`; `seed` fixes random init and LoRA init."""
    src, gguf = resolve_model(cfg.model, cfg.gguf_file)
    config = _load_config(cfg, src, gguf)
    kind = cfg.kind
    if kind == "auto":
        kind = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
    tok = _load_tokenizer(cfg, src, gguf, kind)
    if seed is not None:
        torch.manual_seed(seed)
    auto = _auto_classes(kind)
    if cfg.init == "random":
        model = auto.from_config(config, trust_remote_code=cfg.trust_remote_code)
    else:
        kwargs: dict[str, Any] = {"config": config, "trust_remote_code": cfg.trust_remote_code}
        if gguf:
            kwargs["gguf_file"] = gguf
        else:
            kwargs["use_safetensors"] = True  # never unpickle weights (pytorch_model.bin)
        model = auto.from_pretrained(src, dtype=torch.float32, **kwargs)
        if gguf:
            model = plain_copy(auto, model)
    model = model.float()
    if cfg.keep_layers is not None:
        if kind != "causal":
            raise ConfigError("student.keep_layers: only decoder-only (causal) students can be shrunk")
        keep_decoder_layers(model, cfg.keep_layers)
    if len(tok) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tok))
    model.config.pad_token_id = tok.pad_token_id
    if kind == "seq2seq" and getattr(model.config, "decoder_start_token_id", None) is None:
        model.config.decoder_start_token_id = tok.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tok.pad_token_id
    n_params = sum(p.numel() for p in model.parameters())
    if cfg.lora is not None:
        model = _apply_lora(model, cfg, kind)
    return Student(model=model, tokenizer=tok, kind=kind, n_params=n_params, name=cfg.model)


def freeze_embeddings(model) -> int:
    """Stop training the token embeddings and the output projection (`train.freeze_embeddings`);
    returns the number of parameters frozen (a tied matrix counts once)."""
    frozen: dict[int, torch.Tensor] = {}
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        weight = getattr(module, "weight", None)
        if weight is not None:
            weight.requires_grad_(False)
            frozen[id(weight)] = weight
    return sum(w.numel() for w in frozen.values())


def exportable_model(student: Student):
    """The plain transformers model to save: LoRA merged into a copy, or the model itself."""
    if student.is_lora:
        return copy.deepcopy(student.model).merge_and_unload()
    return student.model


def _without_tied_copies(model, state_dict: dict[str, Any]) -> dict[str, Any]:
    """Drop the second name of each tied parameter (e.g. lm_head.weight tied to the embeddings), as
    save_pretrained does for the model's own tensors, so both ways write the same file."""
    first: dict[int, str] = {}
    copies = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            copies.add(name)
        else:
            first[id(param)] = name
    return {k: v for k, v in state_dict.items() if k not in copies}


def save_student(student: Student, path: str | Path, state_dict: dict[str, Any] | None = None) -> Path:
    """Write weights (safetensors), config and tokenizer so plain from_pretrained loads them;
    `state_dict` (full weights gathered from FSDP processes) replaces the model's own tensors."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model = exportable_model(student)
    if state_dict is not None:
        state_dict = _without_tied_copies(model, state_dict)
    model.save_pretrained(path, state_dict=state_dict)  # safetensors
    student.tokenizer.save_pretrained(path)
    return path


def load_saved_student(path: str | Path, kind: str = "auto") -> Student:
    """Load a folder written by save_student (the run's best/ or a checkpoint)."""
    cfg = StudentConfig(model=str(path), kind=kind)
    return load_student(cfg)

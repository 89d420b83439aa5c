"""Student, training and evaluation sections of the config."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class LoraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"


class StudentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = "google/t5-v1_1-base"  # hub id or local directory
    name: str | None = None  # how reports and sweep folders name this student (default: from model)
    gguf_file: str | None = None  # load weights from this GGUF file inside `model` (dequantised)
    kind: Literal["auto", "seq2seq", "causal"] = "auto"
    init: Literal["pretrained", "random"] = "pretrained"  # random: fresh weights from the model config
    config_overrides: dict[str, Any] = Field(default_factory=dict)  # e.g. tiny sizes for smoke runs
    keep_layers: list[int] | None = None  # derive a smaller student: keep these decoder layers
    tokenizer: str | None = None  # default: the model's own
    trust_remote_code: bool = False
    lora: LoraConfig | None = None


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["standard", "distill", "step_by_step", "single_task", "rationale_input"] = "step_by_step"
    label_source: Literal["gold", "teacher"] = "teacher"  # step_by_step/single_task/rationale_input
    # Rationale methods: train on a teacher rationale only where the teacher's label agrees with gold
    # (the paper's gold-label setting; step_by_step still trains the label task on every example).
    gold_filter: bool = False
    alpha: float = Field(0.5, ge=0, le=1)  # loss = alpha * label + (1 - alpha) * rationale (paper: 0.5)
    label_prefix: str = "predict: "
    rationale_prefix: str = "explain: "
    max_input_length: int = 512
    max_target_length: int = 256
    max_steps: int | None = None
    epochs: float = 1.0
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    max_grad_norm: float = 1.0
    seed: int = 0
    eval_every: int = Field(100, ge=1)  # validation accuracy (best-checkpoint selection) every N steps
    save_every: int | None = None  # extra checkpoints between evaluations (each evaluation saves one)
    keep_checkpoints: int = Field(2, ge=1)  # newest checkpoints kept (plus the best one)
    log_every: int = Field(10, ge=1)  # steps per train_log.jsonl row (losses averaged over them)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    group_by_length: bool = True
    # Padded tokens per forward pass (None: one pass per task). Rows of a step are split into passes
    # of at most this many tokens, each backpropagated before the next: same gradients, bounded
    # activation memory. Refused with a kd: section (its term needs the whole step in one pass).
    max_tokens_per_pass: int | None = Field(None, ge=1)


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int = 32
    max_new_tokens: int = 64
    splits: list[str] = Field(default_factory=lambda: ["valid", "test"])

"""Student and training sections of the config (`student:`, `train:`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class LoraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    r: int = Field(8, ge=1)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
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

    method: Literal[
        "standard", "distill", "step_by_step", "single_task", "answer_first", "rationale_input"
    ] = "step_by_step"
    # Which label step_by_step, single_task, answer_first and rationale_input train on.
    label_source: Literal["gold", "teacher"] = "teacher"
    # Rationale methods: train on a teacher rationale only where the teacher's label agrees with gold
    # (the paper's gold-label setting; step_by_step still trains the label task on every example).
    gold_filter: bool = False
    # Which teacher rationales an example trains on (training/rationales.py, docs/rationales.md):
    # one: the annotation's chosen rationale; agreeing: every distinct parsed sample of
    # teacher_samples whose label agrees with the trained label (gold, or the vote); all: every
    # distinct parsed sample. Samples come from annotate.samples: k.
    rationales: Literal["one", "agreeing", "all"] = "one"
    # example: an example's n rationale rows weigh 1/n each, so its rationale task weighs the same
    # whatever n (an example is not worth more because the teacher agreed with itself more often);
    # rationale: every rationale row weighs like an example.
    rationale_weighting: Literal["example", "rationale"] = "example"
    # Drop every rationale longer than this many student tokens (an example whose rationales are all
    # longer trains no rationale); refused when no example would keep one.
    rationale_max_tokens: int | None = Field(None, ge=1)
    # Keep at most this many rationales per example, taken in rationale_order.
    max_rationales: int | None = Field(None, ge=1)
    # shortest: fewest tokens first (short rationales suit small students and cost less);
    # as_sampled: the teacher's sample order.
    rationale_order: Literal["shortest", "as_sampled"] = "shortest"
    alpha: float = Field(0.5, ge=0, le=1)  # loss = alpha * label + (1 - alpha) * rationale (paper: 0.5)
    # linear: alpha moves from `alpha` at the first step to `alpha_end` at the last (training/schedule.py)
    alpha_schedule: Literal["constant", "linear"] = "constant"
    alpha_end: float = Field(1.0, ge=0, le=1)
    label_prefix: str = "predict: "
    rationale_prefix: str = "explain: "
    max_input_length: int = Field(512, ge=1)
    max_target_length: int = Field(256, ge=1)
    max_steps: int | None = Field(None, ge=1)
    epochs: float = Field(1.0, gt=0)
    # Examples per micro-batch over ALL processes (each of N processes takes batch_size / N of them);
    # an optimizer step takes batch_size * grad_accum examples whatever the number of processes.
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    max_grad_norm: float = Field(1.0, ge=0)  # 0: no clipping
    seed: int = 0
    eval_every: int = Field(100, ge=1)  # validation accuracy (best-checkpoint selection) every N steps
    # geometric: evaluate at eval_every * eval_growth^k (dense early, sparse late; training/schedule.py)
    eval_schedule: Literal["every", "geometric"] = "every"
    eval_growth: float = Field(1.5, gt=1)
    # Stop after this many evaluations in a row without a better validation accuracy (None: never).
    patience: int | None = Field(None, ge=1)
    # What counts as progress for patience: a better validation accuracy, or (accuracy_or_loss) also a
    # new lowest validation loss, so that a student still learning below the accuracy floor goes on.
    patience_metric: Literal["accuracy", "accuracy_or_loss"] = "accuracy"
    # Extra checkpoints between evaluations (each evaluation saves one).
    save_every: int | None = Field(None, ge=1)
    keep_checkpoints: int = Field(2, ge=1)  # newest checkpoints kept (plus the best one)
    log_every: int = Field(10, ge=1)  # steps per train_log.jsonl row (losses averaged over them)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # Keep the token embeddings and the output projection (one matrix when tied, as in SmolLM2) at
    # their pretrained values: no gradient, no optimizer state, no update for the vocabulary-sized
    # matrices, which on CPU are a large share of a small student's step (training/models.py).
    freeze_embeddings: bool = False
    group_by_length: bool = True
    # Padded tokens per forward pass (None: one pass per task). Rows of a step are split into passes
    # of at most this many tokens, each backpropagated before the next: same gradients, bounded
    # activation memory. Refused with a kd: section (its term needs the whole step in one pass).
    max_tokens_per_pass: int | None = Field(None, ge=1)
    # Seconds a process waits in a collective for the others before it fails (process-group timeout):
    # the bound on a hang when a rank dies and the launcher does not stop the others first.
    dist_timeout_s: float = Field(600.0, gt=0)
    # Optimizer steps a DataLoader worker process collates ahead while the current one trains (0: no
    # worker, collate in the training process). Any value trains on the same batches in the same order.
    prefetch_steps: int = Field(2, ge=0)
    # Target rows per chunk of the fused lm_head + cross-entropy (+ token-level KD) for a pass with
    # more target tokens than this (training/chunked_ce.py): then the [targets, vocab] logits never
    # exist at once; a pass with at most this many takes the plain path. 0 or None: always plain.
    loss_chunk_tokens: int | None = Field(1024, ge=0)
    # Causal students: pack each pass's rows into token buffers (position_ids restart per row,
    # attention confined to each row) instead of padding them (training/packing.py). Seq2seq
    # students and runs with a kd: section stay padded.
    packing: bool = False
    # Tokens per packing buffer (a row longer than this gets a buffer of its own length).
    pack_tokens: int = Field(2048, ge=1)

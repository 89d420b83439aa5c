"""The reference design that bench/train_speed.py measures our trainer against.

It follows the description of the paper's released trainer (our own code, same design):
- every example is tokenised up front into a label pair (input_ids/attention_mask/labels) and a
  rationale pair (expl_input_ids/expl_attention_mask/aux_labels);
- the collator goes through pandas (DataFrame -> column selection -> list of records) and pads each
  half separately to its own longest sequence with transformers' DataCollatorForSeq2Seq;
- a Seq2SeqTrainer subclass (a Trainer subclass for decoder-only students) runs two forward passes
  per step, model(**label_inputs) and model(**rationale_inputs), each with transformers' built-in
  loss over full logits, and mixes alpha * L_label + (1 - alpha) * L_rationale.

Decoder-only students use the same design with the causal loss and the prompt masked with -100.
Only the benchmark imports this module; it is not part of the package.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from transformers import (
    DataCollatorForSeq2Seq,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    Trainer,
    TrainerCallback,
)

IGNORE = -100  # label id HF's built-in losses skip
_LABEL_COLS = ["input_ids", "attention_mask", "labels"]
Row = tuple[list[int], list[int], list[int]]  # input_ids, attention_mask, labels of one sequence
_EXPL_COLS = {"expl_input_ids": "input_ids", "expl_attention_mask": "attention_mask", "aux_labels": "labels"}


def _seq2seq_pair(tok: PreTrainedTokenizerBase, prompt: str, target: str, max_in: int, max_out: int):
    enc = tok(prompt, truncation=True, max_length=max_in)
    tgt = tok(target, add_special_tokens=False, truncation=True, max_length=max_out - 1)["input_ids"]
    tgt = tgt + [tok.eos_token_id]
    return enc["input_ids"], enc["attention_mask"], tgt


def _causal_pair(tok: PreTrainedTokenizerBase, prompt: str, target: str, max_in: int, max_out: int):
    # Prompt and target tokenised separately so the prompt mask is exact; the loss sees target + EOS.
    p = tok(prompt, add_special_tokens=False, truncation=True, max_length=max_in)["input_ids"]
    t = tok(target, add_special_tokens=False, truncation=True, max_length=max_out - 1)["input_ids"]
    ids = p + t + [tok.eos_token_id]
    return ids, [1] * len(ids), [IGNORE] * len(p) + t + [tok.eos_token_id]


def tokenize_features(
    tokenizer: PreTrainedTokenizerBase,
    label_pairs: Sequence[tuple[str, str]],
    rationale_pairs: Sequence[tuple[str, str]],
    kind: str,
    max_input_length: int = 512,
    max_target_length: int = 256,
) -> list[dict[str, list[int]]]:
    """One feature dict per example holding its label row and its rationale row (already formatted
    (prompt, target) text pairs, so both trainers see identical text)."""
    if len(label_pairs) != len(rationale_pairs):
        raise ValueError(f"{len(label_pairs)} label pairs but {len(rationale_pairs)} rationale pairs")
    if kind not in ("seq2seq", "causal"):
        raise ValueError(f"kind must be 'seq2seq' or 'causal', got {kind!r}")
    pair = _seq2seq_pair if kind == "seq2seq" else _causal_pair
    return [
        feature(
            pair(tokenizer, lp, lt, max_input_length, max_target_length),
            pair(tokenizer, rp, rt, max_input_length, max_target_length),
        )
        for (lp, lt), (rp, rt) in zip(label_pairs, rationale_pairs)
    ]


def feature(label_row: Row, rationale_row: Row) -> dict[str, list[int]]:
    """One example's features from its (input_ids, attention_mask, labels) rows: the label row under
    the model's own names, the rationale row under the names the collator splits off."""
    (ids, mask, labels), (e_ids, e_mask, e_labels) = label_row, rationale_row
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "expl_input_ids": e_ids,
        "expl_attention_mask": e_mask,
        "aux_labels": e_labels,
    }


def count_tokens(padded: dict[str, torch.Tensor], kind: str) -> int:
    """Non-padding tokens a forward pass processes: encoder inputs + targets (seq2seq) or the
    sequence (causal, where targets are part of the input)."""
    n = int(padded["attention_mask"].sum())
    if kind == "seq2seq":
        n += int((padded["labels"] != IGNORE).sum())
    return n


class PandasTaskPrefixCollator:
    """Split features into the label half and the rationale half via pandas, pad each on its own."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, kind: str):
        self.kind = kind
        self.pad = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE, return_tensors="pt")

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, dict[str, torch.Tensor]]:
        df = pd.DataFrame(features)
        label_records = df[_LABEL_COLS].to_dict("records")
        expl_records = df[list(_EXPL_COLS)].rename(columns=_EXPL_COLS).to_dict("records")
        return {"label": self.pad(label_records), "rationale": self.pad(expl_records)}


class _TwoPass:
    """compute_loss shared by both trainer classes; records the batch each step trained on."""

    alpha: float
    kind: str
    # (examples, non-padding tokens) per compute_loss call; the dataloader prefetches batches, so
    # counting here rather than in the collator keeps the numbers aligned with timed steps.
    step_sizes: list[tuple[int, int]]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = two_pass_loss(model, inputs, self.alpha)
        n_tok = count_tokens(inputs["label"], self.kind) + count_tokens(inputs["rationale"], self.kind)
        self.step_sizes.append((int(inputs["label"]["input_ids"].shape[0]), n_tok))
        return (loss, None) if return_outputs else loss


def two_pass_loss(model: PreTrainedModel, inputs: dict[str, Any], alpha: float) -> torch.Tensor:
    """alpha * L_label + (1 - alpha) * L_rationale, two forward passes with HF's built-in loss."""
    label_out = model(**inputs["label"])  # logits [batch, label_len, vocab]
    rationale_out = model(**inputs["rationale"])  # logits [batch, rationale_len, vocab]
    return alpha * label_out.loss + (1 - alpha) * rationale_out.loss


class TwoPassSeq2SeqTrainer(_TwoPass, Seq2SeqTrainer):
    """Seq2seq students: the reference trainer's two-pass multi-task loss."""

    def __init__(self, *args: Any, alpha: float = 0.5, kind: str = "seq2seq", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.alpha, self.kind, self.step_sizes = alpha, kind, []


class TwoPassCausalTrainer(_TwoPass, Trainer):
    """Decoder-only students: the same two-pass design on a plain Trainer."""

    def __init__(self, *args: Any, alpha: float = 0.5, kind: str = "causal", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.alpha, self.kind, self.step_sizes = alpha, kind, []


class StepTimer(TrainerCallback):
    """Wall time of each optimisation step (device synchronised so GPU work is included)."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self._t0 = 0.0

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.durations.append(time.perf_counter() - self._t0)


def build_reference_trainer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    features: list[dict[str, list[int]]],
    kind: str,
    *,
    out_dir: str,
    alpha: float = 0.5,
    batch_size: int = 8,
    lr: float = 5e-5,
    max_steps: int = 10,
    seed: int = 0,
    device: str = "cpu",
    bf16: bool = False,
    callbacks: list[TrainerCallback] | None = None,
) -> tuple[Trainer, PandasTaskPrefixCollator]:
    """The reference trainer, configured like the paper's runs (AdamW, linear schedule, no eval)."""
    args = Seq2SeqTrainingArguments(
        output_dir=out_dir,
        per_device_train_batch_size=batch_size,
        max_steps=max_steps,
        learning_rate=lr,
        lr_scheduler_type="linear",
        optim="adamw_torch",
        max_grad_norm=1.0,
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,  # the collator needs the expl_* columns
        dataloader_num_workers=0,
        seed=seed,
        use_cpu=device == "cpu",
        bf16=bf16,
    )
    collator = PandasTaskPrefixCollator(tokenizer, kind)
    cls = TwoPassSeq2SeqTrainer if kind == "seq2seq" else TwoPassCausalTrainer
    trainer = cls(
        model=model,
        args=args,
        train_dataset=features,
        data_collator=collator,
        callbacks=callbacks,
        alpha=alpha,
    )
    return trainer, collator

"""Predictions and metrics for a trained student.

    stepdistill evaluate runs/cqa-sbs                     # best/ on the config's eval splits
    stepdistill evaluate runs/cqa-sbs --split test --checkpoint runs/cqa-sbs/checkpoints/step-200
    stepdistill predict runs/cqa-sbs --input new.jsonl [--rationale]

The commands that load a run folder and call this (`stepdistill evaluate`, `stepdistill predict`)
live in stepdistill/predict.py; the train command calls `evaluate_splits` on best/.

Prediction is batched greedy decoding of the label alone: a step_by_step student is asked with the
label prefix and generates no rationale (that is the method's test-time saving) unless a rationale
is asked for explicitly. With eval.label_decoding: rank, the label is instead the example's most
likely possible label (stepdistill/ranking.py). Training writes
runs/<name>/predictions/<split>.jsonl and metrics.json; `evaluate` writes the same files to
runs/<name>/evaluation/ (into the run folder with --overwrite).
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from stepdistill.data.io import write_jsonl
from stepdistill.errors import ConfigError
from stepdistill.evaluate_config import EvalConfig
from stepdistill.ranking import check_rankable, rank_labels
from stepdistill.schema import Annotation
from stepdistill.tasks.base import Task
from stepdistill.training.batching import encode_source, pad_rows
from stepdistill.training.config import TrainConfig
from stepdistill.training.device import (
    autocast,
    barrier,
    gather_objects,
    is_main,
    rank_world,
)
from stepdistill.training.formatting import (
    ANSWER_FIRST_SEP,
    eval_source,
    rationale_source,
    split_answer_first,
    split_single_task,
)
from stepdistill.training.models import Student


def generation_budget(train_cfg: TrainConfig, eval_cfg: EvalConfig, rationale_first: bool) -> int:
    """New tokens to generate: the label's budget, plus a rationale's (max_target_length) when the
    student writes one before the label (single_task), so the answer is never cut off."""
    return eval_cfg.max_new_tokens + (train_cfg.max_target_length if rationale_first else 0)


class _StopAtText:
    """Stopping criterion: a row is done once its generated text contains `text` (answer_first stops
    after the label's line, so no rationale tokens are generated at test time)."""

    def __init__(self, tokenizer, prompt_len: int, text: str):
        self.tokenizer, self.prompt_len, self.text = tokenizer, prompt_len, text

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.Tensor:
        new = self.tokenizer.batch_decode(input_ids[:, self.prompt_len :], skip_special_tokens=True)
        return torch.tensor([self.text in t for t in new], device=input_ids.device)


@torch.no_grad()
def generate(
    student: Student,
    sources: list[str],
    train_cfg: TrainConfig,
    eval_cfg: EvalConfig,
    max_new_tokens: int | None = None,
    stop_at: str | None = None,
) -> list[str]:
    """Greedy completions of `sources`, batched; prompts sorted by length to waste little padding.
    `max_new_tokens` defaults to eval_cfg.max_new_tokens; `stop_at` ends a row once its text holds it."""
    tok, model = student.tokenizer, student.model
    causal = student.kind == "causal"
    encoded = [encode_source(tok, s, train_cfg, student.kind) for s in sources]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    # Under several processes each takes every N-th batch of the single-process batching, so every
    # prompt is decoded with the same batch mates (same padding) as in a one-process run.
    rank, world = rank_world()
    chunks = [order[i : i + eval_cfg.batch_size] for i in range(0, len(order), eval_cfg.batch_size)]
    done: list[tuple[int, str]] = []
    for chunk in chunks[rank::world]:
        # Decoder-only models continue the prompt, so prompts are left-padded to end together.
        ids, mask = pad_rows([encoded[i] for i in chunk], tok.pad_token_id, left=causal)
        stop = None
        if stop_at is not None:  # decoder-only rows continue the prompt; seq2seq rows start fresh
            from transformers import StoppingCriteriaList

            stop = StoppingCriteriaList([_StopAtText(tok, ids.shape[1] if causal else 0, stop_at)])
        with autocast(device, train_cfg.precision):
            gen = model.generate(
                stopping_criteria=stop,
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens or eval_cfg.max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        if causal:
            gen = gen[:, ids.shape[1] :]
        done.extend(
            (i, text.strip()) for i, text in zip(chunk, tok.batch_decode(gen, skip_special_tokens=True))
        )
    model.train(was_training)
    out: list[str] = [""] * len(sources)
    for i, text in gather_objects(done):
        out[i] = text
    return out


def _teacher_correct(task: Task, ann: Annotation) -> bool | None:
    """Whether the teacher got this row right; None when there is no gold or no teacher output."""
    if ann.gold is None or (ann.teacher_label is None and ann.teacher_raw is None):
        return None
    return task.is_correct(ann.teacher_label, ann.gold)


def predict_labels(
    student: Student | Any,
    task: Task,
    annotations: list[Annotation],
    train_cfg: TrainConfig,
    eval_cfg: EvalConfig,
    rationale: bool = False,
) -> list[dict[str, Any]]:
    """One prediction row per annotation (see the run-folder contract in the README).

    `student` is a PyTorch Student, or any model with `generate` and `rank` methods taking the
    arguments of `generate` and `rank_labels` after the student (a GGUF file run by llama.cpp:
    export/llama_student.py), so an exported student is prompted, parsed and scored by this code."""
    if isinstance(student, Student):
        gen, rank = partial(generate, student), partial(rank_labels, student)
    else:
        gen, rank = student.generate, student.rank
    method = train_cfg.method
    # single_task writes its rationale first; answer_first writes one after the label only when asked.
    with_rationale = method == "single_task" or (method == "answer_first" and rationale)
    budget = generation_budget(train_cfg, eval_cfg, rationale_first=with_rationale)
    stop = ANSWER_FIRST_SEP if method == "answer_first" and not rationale else None
    sources = [eval_source(task, a, train_cfg) for a in annotations]
    preds: list[str | None] = [None] * len(annotations)
    rationales: list[str | None] = [None] * len(annotations)
    ranking = eval_cfg.label_decoding == "rank"
    if ranking:  # the label is the most likely possible one; no text is generated for it
        candidates = [task.candidates(a.fields) for a in annotations]
        check_rankable(method, task, candidates)
        ranked, _ = rank(task, sources, candidates, train_cfg, eval_cfg)
        preds = list(ranked)
    if not ranking or (method == "answer_first" and rationale):
        texts = gen(sources, train_cfg, eval_cfg, max_new_tokens=budget, stop_at=stop)
        labels: list[str | None]
        if method == "single_task":
            split = [split_single_task(task, t) for t in texts]
            rationales, labels = [r for r, _ in split], [label for _, label in split]
        elif method == "answer_first":
            split_af = [split_answer_first(t) for t in texts]
            labels, rationales = [label for label, _ in split_af], [r for _, r in split_af]
        else:
            labels = [t if t else None for t in texts]
        if not ranking:
            preds = labels
    if rationale and method == "step_by_step":
        asks = [rationale_source(task, a, train_cfg) for a in annotations]
        rationales = list(gen(asks, train_cfg, eval_cfg, train_cfg.max_target_length))
    rows = []
    for ann, pred, why in zip(annotations, preds, rationales):
        row = {
            "id": ann.id,
            "input": task.format_input(ann.fields),
            "gold": ann.gold,
            "pred": pred,
            "correct": task.is_correct(pred, ann.gold) if ann.gold is not None else None,
            "teacher_label": ann.teacher_label,
            "teacher_rationale": ann.teacher_rationale,
            "teacher_correct": _teacher_correct(task, ann),
        }
        if rationale:
            row["student_rationale"] = why
        rows.append(row)
    return rows


def score(task: Task, predictions: list[dict[str, Any]]) -> dict[str, Any]:
    """Student and teacher accuracy over rows with a gold label (teacher: rows it annotated).

    `task` is part of the signature so that task-specific metrics can be added; the per-row
    `correct` flags were already decided by task.is_correct.
    """
    scored = [p for p in predictions if p.get("correct") is not None]
    judged = [p for p in predictions if p.get("teacher_correct") is not None]
    correct = sum(bool(p["correct"]) for p in scored)
    t_correct = sum(bool(p["teacher_correct"]) for p in judged)
    return {
        "accuracy": correct / len(scored) if scored else None,
        "correct": correct,
        "n": len(scored),
        "teacher_accuracy": t_correct / len(judged) if judged else None,
        "teacher_correct": t_correct,
        "teacher_n": len(judged),
    }


def outcome_bits(predictions: list[dict[str, Any]]) -> str:
    """Per-row correctness of one validation pass as a string, in the split's (fixed) row order:
    "1" right, "0" wrong, "-" unscored. Logged with every evaluation, so two runs on the same split
    can be compared row by row at any step (paired intervals at matched compute)."""
    marks = {True: "1", False: "0", None: "-"}
    return "".join(marks[None if p.get("correct") is None else bool(p["correct"])] for p in predictions)


def evaluate_splits(
    student: Student,
    task: Task,
    data: dict[str, list[Annotation]],
    train_cfg: TrainConfig,
    eval_cfg: EvalConfig,
    splits: list[str],
    out_dir: Path,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Predict and score each split; writes out_dir/predictions/<split>.jsonl.

    Returns ({split: scores}, latency) where latency is label-only prediction time per example on the
    first non-empty split (tokenisation and decoding included: what a user of `predict` waits).
    """
    results: dict[str, Any] = {}
    latency = None
    for split in splits:
        if split not in data:
            raise ConfigError(
                f"eval.splits: no split '{split}' in this config's data (have: {', '.join(data)})"
            )
        start = time.perf_counter()
        rows = predict_labels(student, task, data[split], train_cfg, eval_cfg)
        wall = time.perf_counter() - start
        if is_main():
            write_jsonl(out_dir / "predictions" / f"{split}.jsonl", rows)
        results[split] = score(task, rows)
        if latency is None and rows:
            latency = {
                "ms_per_example": 1000 * wall / len(rows),
                "examples_per_s": len(rows) / wall,
                "batch_size": eval_cfg.batch_size,
                "device": str(next(student.model.parameters()).device),
                "num_processes": rank_world()[1],
            }
    barrier()
    return results, latency

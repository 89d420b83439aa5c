"""Label prediction by ranking a closed label set: `eval.label_decoding: rank`.

Where every example has a known set of possible labels (a multiple-choice question's choices, an NLI
task's three labels, a generic task's `labels`), the student can be asked which of them it finds most
likely instead of writing a label freely. Each candidate is scored as the target it would have been
in training, read after the same test-time source:

    score(candidate) = sum over the candidate's target tokens t of  log p(t | source, earlier tokens)

and the highest-scoring candidate is the prediction (the first one on a tie). The target is the
label as trained: `format_target(label)` and the end-of-sequence token for the label-first methods
(standard, distill, step_by_step, rationale_input); for answer_first the label and the newline that
ends it, since a rationale follows in training. single_task writes its rationale before the label,
so it has no label to rank without generating one: rank refuses it.

A ranked prediction is always one of the candidates, so a student that has not yet learned the
label's exact wording still gets a fair score; it costs one forward pass per candidate, no decoding.
Decoder-only rows are left-padded so every target ends at the last position and only the last
positions' logits are computed (`logits_to_keep`, where the model takes it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from stepdistill.errors import ConfigError
from stepdistill.evaluate_config import EvalConfig
from stepdistill.tasks.base import Task
from stepdistill.training.batching import IGNORE, encode_source, pad_rows
from stepdistill.training.config import TrainConfig
from stepdistill.training.device import autocast, gather_objects, rank_world
from stepdistill.training.formatting import ANSWER_FIRST_SEP
from stepdistill.training.models import Student

RANKABLE = ("standard", "distill", "step_by_step", "rationale_input", "answer_first")


def check_rankable(method: str, task: Task, candidates: Sequence[Sequence[str] | None]) -> None:
    """ConfigError unless `method` writes its label first and every example has candidates."""
    if method not in RANKABLE:
        raise ConfigError(
            f"eval.label_decoding: rank scores the label a student writes first; {method} writes its "
            "rationale first, so use eval.label_decoding: generate"
        )
    if any(not c for c in candidates):
        raise ConfigError(
            f"eval.label_decoding: rank needs a closed label set, and task '{task.name}' has none for "
            "some examples (set task.labels for a generic task, or use eval.label_decoding: generate)"
        )


def candidate_ids(tokenizer, task: Task, label: str, method: str, cfg: TrainConfig) -> list[int]:
    """The token ids a candidate label is scored on: its training target (see the module doc)."""
    text = task.format_target(label)
    if method == "answer_first":
        return tokenizer(text + ANSWER_FIRST_SEP, add_special_tokens=False)["input_ids"]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[: cfg.max_target_length - 1] + [tokenizer.eos_token_id]


def _causal_scores(model, rows: list[tuple[list[int], list[int]]], pad_id: int, device) -> list[float]:
    """Sum of target log-probabilities per (source, target) row, rows left-padded to end together."""
    keep = max(len(t) for _, t in rows) + 1
    ids, mask = pad_rows([s + t for s, t in rows], pad_id, left=True)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    kwargs = {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "position_ids": positions.to(device),
    }
    try:
        logits = model(**kwargs, logits_to_keep=keep).logits
    except TypeError:  # a model without logits_to_keep: every position's logits
        logits = model(**kwargs).logits
    logits = logits[:, -keep:-1].float()  # position p predicts token p + 1: the last keep - 1 targets
    logp = torch.log_softmax(logits, dim=-1)
    scores = []
    for r, (_, t) in enumerate(rows):
        target = torch.tensor(t, device=logp.device)
        picked = logp[r, logp.shape[1] - len(t) :].gather(-1, target[:, None])
        scores.append(float(picked.sum()))
    return scores


def _seq2seq_scores(model, rows: list[tuple[list[int], list[int]]], pad_id: int, device) -> list[float]:
    """Sum of target log-probabilities per row: the encoder reads the source, the decoder the target."""
    ids, mask = pad_rows([s for s, _ in rows], pad_id)
    labels, _ = pad_rows([t for _, t in rows], IGNORE)
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).logits
    logp = torch.log_softmax(logits.float(), dim=-1)
    labels = labels.to(logp.device)
    picked = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * (labels != IGNORE)
    return [float(x) for x in picked.sum(-1)]


@torch.no_grad()
def rank_labels(
    student: Student,
    task: Task,
    sources: list[str],
    candidates: list[Sequence[str]],
    train_cfg: TrainConfig,
    eval_cfg: EvalConfig,
) -> tuple[list[str], list[list[float]]]:
    """(the best candidate, every candidate's score) per source. Rows are (source, candidate) pairs,
    eval_cfg.batch_size at a time; under several processes each takes every N-th batch and the
    scores are gathered, so every process returns the same predictions as one process would."""
    tok, model = student.tokenizer, student.model
    method = train_cfg.method
    encoded = [encode_source(tok, s, train_cfg, student.kind) for s in sources]
    rows = [
        (i, j, encoded[i], candidate_ids(tok, task, c, method, train_cfg))
        for i, cands in enumerate(candidates)
        for j, c in enumerate(cands)
    ]
    order = sorted(range(len(rows)), key=lambda k: -(len(rows[k][2]) + len(rows[k][3])))
    chunks = [order[k : k + eval_cfg.batch_size] for k in range(0, len(order), eval_cfg.batch_size)]
    score_rows = _causal_scores if student.kind == "causal" else _seq2seq_scores
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rank, world = rank_world()
    done: list[tuple[int, float]] = []
    for chunk in chunks[rank::world]:
        with autocast(device, train_cfg.precision):
            scores = score_rows(model, [(rows[k][2], rows[k][3]) for k in chunk], tok.pad_token_id, device)
        done.extend(zip(chunk, scores))
    model.train(was_training)
    table: list[list[float]] = [[0.0] * len(c) for c in candidates]
    for k, s in gather_objects(done):
        i, j = rows[k][0], rows[k][1]
        table[i][j] = s
    best = [
        cands[max(range(len(cands)), key=lambda j: (table[i][j], -j))] for i, cands in enumerate(candidates)
    ]
    return best, table

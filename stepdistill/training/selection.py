"""Which checkpoint becomes best/: validation accuracy first, validation loss to break ties.

With no validation rows there is nothing to select on: the last checkpoint is exported and the run
says so. The validation loss is the training objective (same method, alpha and targets) on the valid
split, token-averaged over the whole split, computed without dropout.
"""

from __future__ import annotations

from typing import Any

import torch

from stepdistill.schema import Annotation
from stepdistill.tasks.base import Task
from stepdistill.training.batching import collate, encode_examples, step_counts
from stepdistill.training.formatting import build_pairs
from stepdistill.training.rationales import token_counter
from stepdistill.training.step import Objective, run_pass, step_weights


@torch.no_grad()
def valid_loss(student: Any, task: Task, valid: list[Annotation], cfg: Any) -> float | None:
    """The training loss on the valid rows the method can use; None when there are none. The whole
    split is weighed as one step (step_weights with the split's counts), so batching does not change it."""
    tc = cfg.train
    formatted = build_pairs(task, valid, tc, token_counter(student.tokenizer))
    if not formatted.examples:
        return None
    encoded = encode_examples(student.tokenizer, formatted.examples, tc, student.kind, formatted.ids)
    weights = step_weights(tc.method, tc.alpha, step_counts(encoded))
    objective = Objective(student.model, student.kind, tc.method, tc.alpha)
    was_training = objective.training
    objective.eval()
    device = next(objective.parameters()).device
    total = 0.0
    for start in range(0, len(encoded), cfg.eval.batch_size):
        batch = collate(
            encoded[start : start + cfg.eval.batch_size], student.tokenizer.pad_token_id, student.kind
        )
        total += float(run_pass(objective, batch.to(device), weights).total)
    objective.train(was_training)
    return total


def is_better(result: dict[str, Any], state: dict[str, Any]) -> bool:
    """Whether the checkpoint just validated (`result`) replaces the best so far (`state`)."""
    if state.get("best_step") is None:
        return True
    acc, best = result.get("valid_accuracy"), state.get("best_valid_accuracy")
    if acc is None:  # no validation rows: the latest checkpoint is the one to keep
        return True
    if best is None or acc > best:
        return True
    loss, best_loss = result.get("valid_loss"), state.get("best_valid_loss")
    return acc == best and loss is not None and best_loss is not None and loss < best_loss


def improved(result: dict[str, Any], state: dict[str, Any], metric: str = "accuracy") -> bool:
    """Whether an evaluation counts as progress for train.patience (read before `state` is updated).

    accuracy: a strictly better validation accuracy than the best so far. accuracy_or_loss: that,
    or a validation loss below every earlier one: a student whose accuracy is still flat near zero
    while its loss keeps falling (a hard task early in training) is still learning."""
    acc, best = result.get("valid_accuracy"), state.get("best_valid_accuracy")
    if acc is not None and (best is None or acc > best):
        return True
    if metric != "accuracy_or_loss":
        return False
    loss, lowest = result.get("valid_loss"), state.get("min_valid_loss")
    return loss is not None and (lowest is None or loss < lowest)


def outcome_bits(predictions: list[dict[str, Any]]) -> str:
    """Per-row correctness of one validation pass as a string, in the split's (fixed) row order:
    "1" right, "0" wrong, "-" unscored. Logged with every evaluation, so two runs on the same split
    can be compared row by row at any step (paired intervals at matched compute)."""
    marks = {True: "1", False: "0", None: "-"}
    return "".join(marks[None if p.get("correct") is None else bool(p["correct"])] for p in predictions)

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
from stepdistill.training.batching import collate_step, encode_examples
from stepdistill.training.formatting import build_pairs
from stepdistill.training.step import compute_loss


@torch.no_grad()
def valid_loss(student: Any, task: Task, valid: list[Annotation], cfg: Any) -> float | None:
    """The training loss on the valid rows the method can use; None when there are none."""
    tc = cfg.train
    formatted = build_pairs(task, valid, tc)
    if not formatted.examples:
        return None
    encoded = encode_examples(student.tokenizer, formatted.examples, tc, student.kind, formatted.ids)
    base = student.base
    was_training = base.training
    base.eval()
    device = next(base.parameters()).device
    sums = {"label": 0.0, "rationale": 0.0}
    counts = {"label": 0, "rationale": 0}
    size = cfg.eval.batch_size
    for start in range(0, len(encoded), size):
        step = collate_step(
            encoded[start : start + size], student.tokenizer.pad_token_id, student.kind, split=False
        )
        parts = compute_loss(base, step.passes[0].to(device), student.kind, tc)
        sums["label"] += float(parts.label) * parts.n_label_tokens
        sums["rationale"] += float(parts.rationale) * parts.n_rationale_tokens
        counts["label"] += parts.n_label_tokens
        counts["rationale"] += parts.n_rationale_tokens
    base.train(was_training)
    if tc.method == "step_by_step":
        label = sums["label"] / max(1, counts["label"])
        rationale = sums["rationale"] / max(1, counts["rationale"])
        return tc.alpha * label + (1.0 - tc.alpha) * rationale
    return (sums["label"] + sums["rationale"]) / max(1, counts["label"] + counts["rationale"])


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

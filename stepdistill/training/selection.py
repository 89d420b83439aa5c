"""Which checkpoint becomes best/: validation accuracy first, validation loss to break ties.

With no validation rows there is nothing to select on: the last checkpoint is exported and the run
says so. The validation loss is the training objective at that step (the method, alpha as
train.alpha_schedule has it at that step, and the kd: term) on the valid split, token-averaged over
the whole split, computed without dropout. A KD term from stored targets (a top-k file, annotation
log-probs) has targets for training rows only: on valid rows it adds zero, as for a training token
without targets, and the KD tasks' cross-entropy keeps its (1 - kd.weight) share.
"""

from __future__ import annotations

from typing import Any

import torch

from stepdistill.training.batching import Encoded, collate, step_counts
from stepdistill.training.step import Objective, step_weights


@torch.no_grad()
def valid_loss(
    objective: Objective,
    encoded: list[list[Encoded]],
    method: str,
    alpha: float,
    pad_id: int,
    batch_size: int,
) -> float | None:
    """The training loss on the valid rows the method can use (`encoded`); None when there are none.
    The whole split is weighed as one step (step_weights with the split's counts), so batching does
    not change it."""
    if not encoded:
        return None
    weights = step_weights(method, alpha, step_counts(encoded))
    was_training = objective.training
    objective.eval()
    device = next(objective.parameters()).device
    total = 0.0
    for start in range(0, len(encoded), batch_size):
        batch = collate(encoded[start : start + batch_size], pad_id, objective.kind)
        total += float(objective(batch.to(device), weights).total)
    objective.train(was_training)
    return total


def record(result: dict[str, Any], state: dict[str, Any], patience_metric: str) -> None:
    """Fold one validation `result` into the run's `state`: the patience count (evaluations in a row
    without progress, see `improved`), the lowest validation loss and the best step so far."""
    if result.get("valid_accuracy") is not None:
        progress = improved(result, state, patience_metric)
        state["evals_since_best"] = 0 if progress else state.get("evals_since_best", 0) + 1
        if result.get("valid_loss") is not None:
            state["min_valid_loss"] = min(result["valid_loss"], state.get("min_valid_loss") or float("inf"))
    if is_better(result, state):
        state.update(
            best_step=state["step"],
            best_valid_accuracy=result["valid_accuracy"],
            best_valid_loss=result.get("valid_loss"),
        )


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

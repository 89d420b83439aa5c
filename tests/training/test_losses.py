"""Loss arithmetic against hand computation on hand-built logits."""

from __future__ import annotations

import math

import pytest
import torch

from stepdistill.training.batching import StepCounts
from stepdistill.training.losses import token_losses
from stepdistill.training.step import loss_terms, step_weights


def _ce(row: list[float], target: int) -> float:
    return math.log(sum(math.exp(x) for x in row)) - row[target]


# Four target tokens over a 3-word vocabulary: two label tokens (task 0), two rationale tokens (1).
LOGITS = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 0.0]]
TARGETS = [0, 2, 2, 1]
TASKS = [0, 0, 1, 1]
CE = [_ce(r, t) for r, t in zip(LOGITS, TARGETS)]


def _weighted(method: str, alpha: float, tasks: list[int], counts: StepCounts, scale: float = 1.0):
    w = step_weights(method, alpha, counts, scale)
    per_token = token_losses(torch.tensor(LOGITS), torch.tensor(TARGETS))
    on = torch.where(torch.tensor(tasks) == 0, w.label, w.rationale)
    return float((per_token * on).sum())


def test_token_losses_are_cross_entropies():
    per_token = token_losses(torch.tensor(LOGITS), torch.tensor(TARGETS))
    assert per_token.tolist() == pytest.approx(CE, abs=1e-6)


def test_step_by_step_mixes_the_two_task_means_with_alpha():
    counts = StepCounts(2, 2, 1, 1)
    label, rationale = (CE[0] + CE[1]) / 2, (CE[2] + CE[3]) / 2
    assert _weighted("step_by_step", 0.25, TASKS, counts) == pytest.approx(0.25 * label + 0.75 * rationale)
    sums = {"loss": 0.25 * label + 0.75 * rationale, "label": CE[0] + CE[1], "rationale": CE[2] + CE[3]}
    terms = loss_terms(sums, counts, "step_by_step", 0.25, 1.0)
    assert terms == pytest.approx({"loss": sums["loss"], "label_loss": label, "rationale_loss": rationale})


@pytest.mark.parametrize("method", ["standard", "distill", "single_task", "rationale_input"])
def test_other_methods_take_the_plain_token_mean(method):
    assert _weighted(method, 0.25, [0, 0, 0, 0], StepCounts(4, 0, 2, 2)) == pytest.approx(sum(CE) / 4)


def test_weights_of_a_part_use_the_counts_of_the_whole_step():
    """Tokens of a step split over processes: each process's share times the process count (DDP
    averages) adds up to the step's loss."""
    counts = StepCounts(n_label_tokens=2, n_rationale_tokens=6, n_label_rows=2, n_examples=2)
    w = step_weights("step_by_step", 0.4, counts, scale=2.0)
    assert (w.label, w.rationale, w.label_row) == pytest.approx((2 * 0.4 / 2, 2 * 0.6 / 6, 2 * 0.4 / 2))
    w1 = step_weights("standard", 0.4, StepCounts(5, 0, 5, 5), scale=1.0)
    assert (w1.label, w1.label_row) == pytest.approx((1 / 5, 1 / 5))


def test_alpha_one_ignores_rationales_but_keeps_the_graph():
    logits = torch.tensor(LOGITS, requires_grad=True)
    w = step_weights("step_by_step", 1.0, StepCounts(2, 2, 1, 1))
    on = torch.where(torch.tensor(TASKS) == 0, w.label, w.rationale)
    (token_losses(logits, torch.tensor(TARGETS)) * on).sum().backward()
    assert logits.grad[2:].abs().sum() == 0 and logits.grad[:2].abs().sum() > 0

"""Loss arithmetic against hand computation on hand-built logits."""

from __future__ import annotations

import math

import pytest
import torch

from stepdistill.training.losses import mix, token_losses


def _ce(row: list[float], target: int) -> float:
    return math.log(sum(math.exp(x) for x in row)) - row[target]


# Four target tokens over a 3-word vocabulary: two label tokens (task 0), two rationale tokens (1).
LOGITS = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 0.0]]
TARGETS = [0, 2, 2, 1]
TASKS = [0, 0, 1, 1]


def _inputs():
    return token_losses(torch.tensor(LOGITS), torch.tensor(TARGETS)), torch.tensor(TASKS)


def test_token_losses_are_cross_entropies():
    per_token, _ = _inputs()
    assert per_token.tolist() == pytest.approx([_ce(r, t) for r, t in zip(LOGITS, TARGETS)], abs=1e-6)


def test_step_by_step_mixes_the_two_task_means_with_alpha():
    per_token, tasks = _inputs()
    ce = [_ce(r, t) for r, t in zip(LOGITS, TARGETS)]
    label, rationale = (ce[0] + ce[1]) / 2, (ce[2] + ce[3]) / 2
    total, lab, rat, n_lab, n_rat = mix("step_by_step", 0.25, per_token, tasks)
    assert (float(lab), float(rat), n_lab, n_rat) == (pytest.approx(label), pytest.approx(rationale), 2, 2)
    assert float(total) == pytest.approx(0.25 * label + 0.75 * rationale)


@pytest.mark.parametrize("method", ["standard", "distill", "single_task", "rationale_input"])
def test_other_methods_take_the_plain_token_mean(method):
    per_token, _ = _inputs()
    ce = [_ce(r, t) for r, t in zip(LOGITS, TARGETS)]
    total, label, rationale, n_label, n_rat = mix(method, 0.25, per_token, torch.zeros(4, dtype=torch.long))
    assert float(total) == pytest.approx(sum(ce) / 4) == float(label)
    assert (float(rationale), n_label, n_rat) == (0.0, 4, 0)


def test_alpha_one_ignores_rationales_but_keeps_the_graph():
    logits = torch.tensor(LOGITS, requires_grad=True)
    total, *_ = mix("step_by_step", 1.0, token_losses(logits, torch.tensor(TARGETS)), torch.tensor(TASKS))
    total.backward()
    assert logits.grad[2:].abs().sum() == 0 and logits.grad[:2].abs().sum() > 0

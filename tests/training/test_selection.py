"""What counts as progress for train.patience, and the per-row validation marks."""

from __future__ import annotations

from stepdistill.evaluate import outcome_bits
from stepdistill.training.selection import improved


def test_accuracy_rule_needs_a_strictly_better_accuracy():
    state = {"best_valid_accuracy": 0.5, "min_valid_loss": 1.0}
    assert improved({"valid_accuracy": 0.6, "valid_loss": 2.0}, state)
    assert not improved({"valid_accuracy": 0.5, "valid_loss": 0.1}, state)  # a lower loss is not enough
    assert improved({"valid_accuracy": 0.0, "valid_loss": 3.0}, {"best_valid_accuracy": None})


def test_accuracy_or_loss_rule_also_counts_a_new_lowest_loss():
    state = {"best_valid_accuracy": 0.05, "min_valid_loss": 0.84}
    rule = "accuracy_or_loss"
    assert improved({"valid_accuracy": 0.025, "valid_loss": 0.69}, state, rule)  # flat accuracy, loss falls
    assert not improved({"valid_accuracy": 0.025, "valid_loss": 0.84}, state, rule)  # equal loss: no
    assert not improved({"valid_accuracy": 0.05, "valid_loss": 0.9}, state, rule)
    assert improved({"valid_accuracy": 0.06, "valid_loss": 0.9}, state, rule)
    assert improved(
        {"valid_accuracy": 0.0, "valid_loss": 5.0}, {"best_valid_accuracy": 0.0}, rule
    )  # first loss


def test_outcome_bits_mark_each_row_in_order():
    rows = [{"correct": True}, {"correct": False}, {"correct": None}, {}, {"correct": 1}]
    assert outcome_bits(rows) == "10--1"

"""What counts as progress for train.patience, and the per-row validation marks."""

from __future__ import annotations

import pytest

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


def test_logged_validation_loss_uses_the_alpha_of_its_step(
    tmp_path, make_config, make_splits, tiny_causal_dir, toy_task
):
    """train.alpha_schedule linear: the validation loss logged at step 4 is the objective with the
    alpha of that step, recomputed here on the checkpoint of step 4."""
    from stepdistill.data.io import iter_jsonl
    from stepdistill.train import train_on
    from stepdistill.training.batching import encode_examples
    from stepdistill.training.formatting import build_pairs
    from stepdistill.training.models import load_saved_student
    from stepdistill.training.schedule import alpha_at
    from stepdistill.training.selection import valid_loss
    from stepdistill.training.step import Objective

    cfg = make_config(tmp_path, tiny_causal_dir, max_steps=4, eval_every=4, alpha=0.1,
                      alpha_schedule="linear", alpha_end=0.9, keep_checkpoints=1)  # fmt: skip
    splits = make_splits()
    run = train_on(cfg, toy_task, splits)
    [logged] = [r["valid_loss"] for _, r in iter_jsonl(run / "train_log.jsonl") if "valid_loss" in r]
    student = load_saved_student(run / "checkpoints" / "step-4", kind="causal")
    pairs = build_pairs(toy_task, splits["valid"], cfg.train)
    enc = encode_examples(student.tokenizer, pairs.examples, cfg.train, student.kind, pairs.ids)
    objective = Objective(student.model, student.kind)
    pad, bs = student.tokenizer.pad_token_id, cfg.eval.batch_size
    alpha = alpha_at(cfg.train, 3, 4)
    assert alpha == pytest.approx(0.9)
    assert logged == pytest.approx(valid_loss(objective, enc, "step_by_step", alpha, pad, bs), rel=1e-5)
    assert logged != pytest.approx(valid_loss(objective, enc, "step_by_step", 0.1, pad, bs), rel=1e-3)

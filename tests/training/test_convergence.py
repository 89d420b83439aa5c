"""Training to convergence: geometric evaluation, the patience rule, the alpha schedule and the
learning-curve columns (examples and FLOPs seen) of the training loop."""

from __future__ import annotations

import json

import pytest

from stepdistill.data.io import iter_jsonl
from stepdistill.train import train_on
from stepdistill.training.batching import encode_examples
from stepdistill.training.flops import FlopModel
from stepdistill.training.formatting import build_pairs
from stepdistill.training.models import load_student
from stepdistill.training.schedule import alpha_at


def _rows(run):
    return [r for _, r in iter_jsonl(run / "train_log.jsonl")]


def test_patience_stops_when_validation_accuracy_stalls(
    tmp_path, make_config, make_splits, tiny_causal_dir, toy_task
):
    # lr 0: the student never changes, so validation accuracy never improves after the first evaluation
    cfg = make_config(tmp_path, tiny_causal_dir, method="standard", lr=1e-12, max_steps=20, eval_every=1,
                      eval_schedule="geometric", eval_growth=2.0, patience=2, log_every=1)  # fmt: skip
    run = train_on(cfg, toy_task, make_splits())
    valid = [r for r in _rows(run) if "valid_accuracy" in r]
    assert [r["step"] for r in valid] == [1, 2, 4]  # geometric 1, 2, 4: two stale evaluations, stop
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 4 and metrics["train"]["stopped_early"] is True
    assert metrics["best_step"] is not None


def test_learning_curve_columns_count_examples_and_flops(
    tmp_path, make_config, make_splits, tiny_causal_dir, toy_task
):
    cfg = make_config(tmp_path, tiny_causal_dir, method="step_by_step", max_steps=4, eval_every=2,
                      batch_size=4, log_every=1)  # fmt: skip
    splits = make_splits(4)  # one step holds all 4 examples: every step trains on the same rows
    run = train_on(cfg, toy_task, splits)
    student = load_student(cfg.student, seed=0)
    pairs = build_pairs(toy_task, splits["train"], cfg.train)
    encoded = encode_examples(student.tokenizer, pairs.examples, cfg.train, student.kind)
    per_step = FlopModel.from_model(student.model, "causal").train_flops(
        [(len(e.source), len(e.target)) for ex in encoded for e in ex]
    )
    valid = [r for r in _rows(run) if "valid_accuracy" in r]
    assert [(r["step"], r["examples_seen"], r["train_flops"]) for r in valid] == [
        (2, 8, 2 * per_step),
        (4, 16, 4 * per_step),
    ]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"]["train_flops"] == 4 * per_step and metrics["train"]["stopped_early"] is False


def test_alpha_schedule_mixes_each_logged_step(tmp_path, make_config, make_splits, tiny_causal_dir, toy_task):
    cfg = make_config(tmp_path, tiny_causal_dir, method="step_by_step", max_steps=5, eval_every=5,
                      log_every=1, alpha=0.2, alpha_schedule="linear", alpha_end=1.0)  # fmt: skip
    run = train_on(cfg, toy_task, make_splits())
    logged = [r for r in _rows(run) if "loss" in r]
    assert [r["step"] for r in logged] == [1, 2, 3, 4, 5]
    for r in logged:  # one step per row: the loss mixes that step's alpha (0.2, 0.4, ..., 1.0)
        alpha = alpha_at(cfg.train, r["step"] - 1, 5)
        assert r["loss"] == pytest.approx(
            alpha * r["label_loss"] + (1 - alpha) * r["rationale_loss"], rel=1e-5
        )
    assert alpha_at(cfg.train, 4, 5) == pytest.approx(1.0)


def test_each_evaluation_logs_per_row_validation_outcomes(
    tmp_path, make_config, make_splits, tiny_causal_dir, toy_task
):
    cfg = make_config(tmp_path, tiny_causal_dir, method="standard", max_steps=2, eval_every=1, log_every=1)
    run = train_on(cfg, toy_task, make_splits())
    valid = [r for r in _rows(run) if "valid_accuracy" in r]
    assert [r["step"] for r in valid] == [1, 2]
    for r in valid:  # one mark per validation row; the marks add up to the logged accuracy
        bits = r["valid_correct"]
        assert len(bits) == r["valid_n"] and set(bits) <= {"0", "1"}
        assert bits.count("1") / len(bits) == pytest.approx(r["valid_accuracy"])
    # the best evaluation's marks are those of the valid predictions written at the end (best/ model)
    best = json.loads((run / "metrics.json").read_text())["best_step"]
    lines = (run / "predictions" / "valid.jsonl").read_text().splitlines()
    final = "".join("1" if json.loads(line)["correct"] else "0" for line in lines)
    assert next(r for r in valid if r["step"] == best)["valid_correct"] == final

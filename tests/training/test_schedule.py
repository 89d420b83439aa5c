"""alpha schedule, geometric evaluation steps and the patience rule, against hand-computed values."""

from __future__ import annotations

import pytest

from stepdistill.training.config import TrainConfig
from stepdistill.training.schedule import alpha_at, eval_steps, patience_exhausted


def test_constant_alpha_is_the_config_value():
    tc = TrainConfig(alpha=0.3)
    assert [alpha_at(tc, s, 10) for s in (0, 5, 9)] == [0.3, 0.3, 0.3]


def test_linear_alpha_rises_from_alpha_to_alpha_end():
    tc = TrainConfig(alpha=0.5, alpha_schedule="linear", alpha_end=1.0)
    # 5 steps: 0.5, 0.625, 0.75, 0.875, 1.0
    assert [alpha_at(tc, s, 5) for s in range(5)] == pytest.approx([0.5, 0.625, 0.75, 0.875, 1.0])
    assert alpha_at(tc, 99, 5) == pytest.approx(1.0)  # clamped past the end
    assert alpha_at(tc, 0, 1) == 0.5  # a one-step run keeps the start value


def test_every_schedule_ends_on_the_last_step():
    assert eval_steps(TrainConfig(eval_every=4), 10) == [4, 8, 10]
    assert eval_steps(TrainConfig(eval_every=5), 10) == [5, 10]
    assert eval_steps(TrainConfig(eval_every=50), 10) == [10]


def test_geometric_schedule_by_hand():
    tc = TrainConfig(eval_every=10, eval_schedule="geometric", eval_growth=2.0)
    assert eval_steps(tc, 100) == [10, 20, 40, 80, 100]
    tc = TrainConfig(eval_every=2, eval_schedule="geometric", eval_growth=1.5)
    # 2, 3, 4.5 -> 4 (round half to even), 6.75 -> 7, 10.125 -> 10, 15.19 -> 15, then the last step
    assert eval_steps(tc, 16) == [2, 3, 4, 7, 10, 15, 16]


def test_patience_is_exhausted_after_that_many_evaluations_without_a_new_best():
    tc = TrainConfig(patience=2)
    assert [patience_exhausted(tc, n) for n in (0, 1, 2, 3)] == [False, False, True, True]
    assert not patience_exhausted(TrainConfig(), 100)  # no patience: run the whole budget


def test_config_rejects_bad_schedule_values():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        TrainConfig(eval_growth=1.0)
    with pytest.raises(ValidationError):
        TrainConfig(patience=0)
    with pytest.raises(ValidationError):
        TrainConfig(alpha_end=1.5)

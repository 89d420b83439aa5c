"""Cutting a step's rows into forward passes."""

from __future__ import annotations

import pytest

from stepdistill.training.batching import Encoded, padded_cost, plan_passes, shard_step


def _row(n_src: int, n_tgt: int, task: int) -> Encoded:
    return Encoded(list(range(1, n_src + 1)), [7] * (n_tgt - 1) + [2], task)


def _examples() -> list[list[Encoded]]:
    # (label row, rationale row) per example: short labels, rationales of very different lengths
    return [
        [_row(10, 2, 0), _row(10, 30, 1)],
        [_row(12, 3, 0), _row(12, 5, 1)],
        [_row(8, 2, 0), _row(8, 60, 1)],
    ]


def test_without_budget_one_pass_per_task_label_rows_first():
    rows = [e for ex in _examples() for e in ex]
    passes = plan_passes(rows, "causal", None)
    assert [[e.task_id for e in p] for p in passes] == [[0, 0, 0], [1, 1, 1]]
    # the label pass is padded to the longest label row (15), not to the longest rationale row (68)
    assert padded_cost(passes[0], "causal") == 3 * 15
    assert padded_cost(rows, "causal") == 6 * 68


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
@pytest.mark.parametrize("budget", [1, 40, 80, 150, 10_000])
def test_budget_bounds_every_pass_and_keeps_every_row(kind, budget):
    rows = [e for ex in _examples() for e in ex]
    passes = plan_passes(rows, kind, budget)
    assert sorted(id(e) for p in passes for e in p) == sorted(id(e) for e in rows)
    for p in passes:
        assert len({e.task_id for e in p}) == 1
        # over budget only when a single row is longer than the budget by itself
        assert padded_cost(p, kind) <= budget or len(p) == 1
    if budget == 1:
        assert len(passes) == len(rows)
    if budget == 10_000:
        assert len(passes) == 2


def test_step_counts_target_tokens_of_the_whole_step():
    step = shard_step([_examples()], 0, 1, pad_id=0, kind="causal", max_tokens=80)
    passes = [batch for batch, real in step.micro[0] if real]
    assert step.n_examples == step.counts.n_examples == 3
    assert step.counts.n_label_tokens == 2 + 3 + 2 and step.counts.n_rationale_tokens == 30 + 5 + 60
    assert step.counts.n_label_rows == 3
    assert sum(int((b.labels[:, 1:] != -100).sum()) for b in passes) == 7 + 95
    assert step.n_tokens == (10 + 2) + (10 + 30) + (12 + 3) + (12 + 5) + (8 + 2) + (8 + 60)  # no padding
    one = shard_step([_examples()], 0, 1, pad_id=0, kind="causal", max_tokens=None, split=False)
    assert len(one.micro[0]) == 1 and one.micro[0][0][0].task_ids.tolist() == [0, 1, 0, 1, 0, 1]


def test_shard_step_deals_examples_and_pads_passes():
    from stepdistill.training.batching import shard_step

    micro = [_examples(), _examples()[:1]]  # a micro-batch of 3 examples, then one of 1
    shards = [shard_step(micro, r, 2, pad_id=0, kind="causal", max_tokens=40) for r in range(2)]
    # every example exactly once: rank 0 takes examples 0 and 2 of the first micro-batch, rank 1 example 1
    assert [s.n_examples for s in shards] == [3, 1]
    for k in range(2):
        assert len(shards[0].micro[k]) == len(shards[1].micro[k])  # same number of passes everywhere
    real = [[sum(int(b.task_ids.numel()) for b, ok in m if ok) for m in s.micro] for s in shards]
    assert real == [[4, 2], [2, 0]]  # rows (label + rationale) per micro-batch; rank 1 pads the second
    assert all(not ok for _, ok in shards[1].micro[1])
    # the counts are those of the whole step, identical on both ranks
    assert shards[0].counts == shards[1].counts
    assert shards[0].counts.n_label_tokens == (2 + 3 + 2) + 2 and shards[0].counts.n_examples == 4

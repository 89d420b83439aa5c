"""Collating ahead in a DataLoader worker: exactly the batches of the plain path, in order, and the
same training run."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from stepdistill.data.io import iter_jsonl
from stepdistill.train import train_on
from stepdistill.training.batching import Batch, Encoded, RankStep, StepStream, step_loader
from stepdistill.training.config import TrainConfig

TIMING = {"tokens_per_s", "examples_per_s", "elapsed_s"}


def _encoded(n: int) -> list[list[Encoded]]:
    """n examples of a label row and a rationale row of varied lengths (token ids need no tokenizer)."""
    return [
        [
            Encoded(list(range(3, 6 + i % 5)), [7] * (1 + i % 2) + [2], 0, f"ex-{i}\tlabel"),
            Encoded(list(range(3, 6 + i % 5)), [9] * (4 + i % 7) + [2], 1, f"ex-{i}\trationale"),
        ]
        for i in range(n)
    ]


def _same_batch(a: Batch, b: Batch) -> bool:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if not (torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y):
            return False
    return True


def _same_step(a: RankStep, b: RankStep) -> bool:
    if (a.counts, a.n_examples, a.n_tokens) != (b.counts, b.n_examples, b.n_tokens):
        return False
    flat_a = [(batch, real) for passes in a.micro for batch, real in passes]
    flat_b = [(batch, real) for passes in b.micro for batch, real in passes]
    return len(flat_a) == len(flat_b) and all(
        ra == rb and _same_batch(ba, bb) for (ba, ra), (bb, rb) in zip(flat_a, flat_b)
    )


def _flops(rows: list[tuple[int, int]]) -> int:
    return sum(s + t for s, t in rows)


@pytest.mark.parametrize("ahead", [0, 1, 3])
@pytest.mark.parametrize(("rank", "world"), [(0, 1), (1, 2)])
def test_loaded_steps_are_the_plain_steps_in_order(ahead, rank, world):
    tc = TrainConfig(batch_size=4, grad_accum=2, seed=3, max_tokens_per_pass=30)
    plain = StepStream(_encoded(11), tc, 0, "causal", rank, world)
    loaded = StepStream(_encoded(11), tc, 0, "causal", rank, world)
    steps = range(1, 3 * plain.per_epoch + 1)  # three epochs, starting mid-run as a resume does
    got = list(step_loader(loaded, steps, _flops, ahead, pin=False))
    assert len(got) == len(steps)
    assert all(_same_step(g, plain[s]) and f == _flops(plain.rows(s)) for (g, f), s in zip(got, steps))


def _failing_flops(rows: list[tuple[int, int]]) -> int:
    raise ValueError("a row has no target")


def test_a_collation_error_reaches_the_training_process():
    tc = TrainConfig(batch_size=4)
    with pytest.raises(ValueError, match="a row has no target"):
        next(iter(step_loader(StepStream(_encoded(4), tc, 0, "causal"), range(2), _failing_flops, 2, False)))


def test_to_device_keeps_every_field():
    tc = TrainConfig(batch_size=4)
    plan = StepStream(_encoded(4), tc, 0, "seq2seq")[0]
    batch = plan.micro[0][0][0]
    moved = batch.to(torch.device("cpu"), non_blocking=True)
    assert _same_batch(moved, batch) and moved.keys == batch.keys


def test_mapping_a_packed_batch_reaches_its_packed_tensors():
    # to_device and pin go through Batch.map_tensors: a packed pass's positions and target indices
    # must move (and be pinned) with the rest, or a GPU step would mix devices.
    tc = TrainConfig(batch_size=4, packing=True, pack_tokens=64)
    plan = StepStream(_encoded(4), tc, 0, "causal")[0]
    batch = plan.micro[0][0][0]
    assert batch.packed is not None
    mapped = batch.map_tensors(lambda t: t.to(torch.float64))
    assert mapped.input_ids.dtype == torch.float64 and mapped.packed.max_length == batch.packed.max_length
    for field in dataclasses.fields(batch.packed):
        value = getattr(mapped.packed, field.name)
        if isinstance(value, torch.Tensor):
            assert value.dtype == torch.float64, field.name
    moved = batch.to(torch.device("cpu"), non_blocking=True)
    assert torch.equal(moved.packed.target_index, batch.packed.target_index)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_pinned_steps_equal_the_plain_ones():
    tc = TrainConfig(batch_size=4, grad_accum=2)
    plan = StepStream(_encoded(8), tc, 0, "causal")[0]
    pinned = plan.pin_memory()
    assert _same_step(pinned, plan)
    assert all(b.input_ids.is_pinned() for passes in pinned.micro for b, _ in passes)


@pytest.mark.slow
def test_fit_with_prefetch_equals_fit_without(tmp_path, make_config, make_splits, tiny_causal_dir, toy_task):
    # Dropout on, accumulation and a token budget (several passes per step), two epochs.
    train = dict(max_steps=4, eval_every=4, log_every=1, grad_accum=2, lr=5e-3, max_tokens_per_pass=40)
    splits = make_splits(6)
    runs = []
    for depth in (0, 3):
        cfg = make_config(tmp_path / str(depth), tiny_causal_dir, prefetch_steps=depth, **train)
        cfg.student.config_overrides = {"attention_dropout": 0.2}
        runs.append(train_on(cfg, toy_task, splits))

    def log(run):
        return [
            {k: v for k, v in r.items() if k not in TIMING} for _, r in iter_jsonl(run / "train_log.jsonl")
        ]

    assert log(runs[0]) == log(runs[1]) and len(log(runs[0])) == 5

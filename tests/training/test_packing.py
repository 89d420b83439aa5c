"""Packed passes for causal students: the buffer layout, and the same loss and gradients as the
padded pass of the same rows (one pass, a sharded step, a whole fit)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from stepdistill.data.io import iter_jsonl
from stepdistill.train import train_on
from stepdistill.training.batching import (
    IGNORE,
    StepStream,
    collate,
    encode_examples,
    shard_step,
    step_counts,
)
from stepdistill.training.config import StudentConfig, TrainConfig
from stepdistill.training.formatting import build_pairs
from stepdistill.training.models import load_student
from stepdistill.training.packing import pack, place_rows
from stepdistill.training.step import Objective, step_weights


def test_place_rows_first_fit_by_decreasing_length():
    assert place_rows([3, 5, 2, 4], 7) == [[1, 2], [3, 0]]
    assert place_rows([9, 2], 4) == [[0], [1]]  # a row longer than the capacity: its own buffer


def test_pack_layout_positions_and_target_indices():
    sources, targets = [[11, 12], [21], [31, 32, 33]], [[13, 2], [22, 23, 2], [2]]
    ids, mask, labels, p = pack(sources, targets, [0, 1, 0], pad_id=0, capacity=5)
    # lengths 4, 4, 4 with capacity 5: one row per buffer, each with a one-token tail
    assert ids.tolist() == [[11, 12, 13, 2], [21, 22, 23, 2], [31, 32, 33, 2]]
    assert mask.sum() == 12 and labels[0].tolist() == [IGNORE, IGNORE, 13, 2]
    ids, mask, labels, p = pack(sources, targets, [0, 1, 0], pad_id=0, capacity=8)
    assert ids.tolist() == [[11, 12, 13, 2, 21, 22, 23, 2], [31, 32, 33, 2, 0, 0, 0, 0]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 0, 1, 2, 3], [0, 1, 2, 3, 0, 1, 2, 3]]
    assert mask.tolist() == [[1] * 8, [1] * 4 + [0] * 4]
    # targets row by row; each is predicted by the state just before it
    assert p.target_ids.tolist() == [13, 2, 22, 23, 2, 2]
    assert p.target_index.tolist() == [1, 2, 4, 5, 6, 10]
    assert p.target_rows.tolist() == [0, 0, 1, 1, 1, 2]
    assert p.target_positions.tolist() == [2, 3, 1, 2, 3, 3]
    assert p.target_tasks.tolist() == [0, 0, 1, 1, 1, 0]
    assert p.cu_seq_lens.tolist() == [0, 4, 8, 12, 16] and p.max_length == 4
    flat = ids.flatten()
    assert (flat[p.target_index + 1] == p.target_ids).all()


def test_flash_attention_gets_the_precomputed_sequence_lengths():
    _, _, _, p = pack([[11, 12], [21]], [[2], [22, 2]], [0, 1], pad_id=0, capacity=8)
    flash = SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2"))
    kwargs = p.attention_kwargs(flash)
    assert kwargs["cu_seq_lens_q"].tolist() == kwargs["cu_seq_lens_k"].tolist() == [0, 3, 6]
    assert kwargs["max_length_q"] == kwargs["max_length_k"] == 3
    assert p.attention_kwargs(SimpleNamespace(config=SimpleNamespace(_attn_implementation="sdpa"))) == {}


def _rows(student, tc, toy_task, toy_annotations):
    return encode_examples(
        student.tokenizer, build_pairs(toy_task, toy_annotations, tc).examples, tc, "causal"
    )


def _loss_and_grads(model, batch, counts, tc, chunk):
    objective = Objective(model, "causal", None, chunk)
    objective.zero_grad()
    out = objective(batch, step_weights(tc.method, tc.alpha, counts))
    out.total.backward()
    return out.sums, {n: p.grad.clone() for n, p in model.named_parameters()}


def _assert_same(a, b):
    assert a[0].keys() == b[0].keys()
    for key in a[0]:
        torch.testing.assert_close(a[0][key], b[0][key], atol=1e-5, rtol=1e-5)
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["step_by_step", "standard"])
@pytest.mark.parametrize("chunk", [None, 7])
def test_packed_pass_equals_padded_pass(tiny_causal_dir, toy_task, toy_annotations, method, chunk):
    student = load_student(StudentConfig(model=str(tiny_causal_dir)))
    student.model.eval()
    tc = TrainConfig(method=method, alpha=0.3)
    enc = _rows(student, tc, toy_task, toy_annotations)
    pad_id = student.tokenizer.pad_token_id
    padded = collate(enc, pad_id, "causal")
    longest = padded.input_ids.shape[1]
    packed = collate(enc, pad_id, "causal", pack_tokens=2 * longest + 1)  # buffers with tails
    assert packed.packed is not None and packed.input_ids.shape[0] < padded.input_ids.shape[0]
    assert packed.n_tokens == padded.n_tokens
    counts = step_counts(enc)
    _assert_same(
        _loss_and_grads(student.model, packed, counts, tc, chunk),
        _loss_and_grads(student.model, padded, counts, tc, chunk),
    )


def test_seq2seq_rows_stay_padded(tiny_seq2seq_dir, toy_task, toy_annotations):
    student = load_student(StudentConfig(model=str(tiny_seq2seq_dir)))
    tc = TrainConfig(method="step_by_step")
    enc = encode_examples(
        student.tokenizer, build_pairs(toy_task, toy_annotations, tc).examples, tc, "seq2seq"
    )
    assert collate(enc, student.tokenizer.pad_token_id, "seq2seq", pack_tokens=64).packed is None


def test_sharded_packed_passes_equal_padded_ones(tiny_causal_dir, toy_task, toy_annotations):
    student = load_student(StudentConfig(model=str(tiny_causal_dir)))
    student.model.eval()
    tc = TrainConfig(method="step_by_step", alpha=0.5)
    enc = _rows(student, tc, toy_task, toy_annotations)
    micro = [enc[:4], enc[4:]]
    pad_id = student.tokenizer.pad_token_id
    for rank in range(2):
        padded = shard_step(micro, rank, 2, pad_id, "causal", None)
        packed = shard_step(micro, rank, 2, pad_id, "causal", None, pack_tokens=96)
        assert packed.counts == padded.counts and packed.n_tokens == padded.n_tokens
        weights = step_weights(tc.method, tc.alpha, padded.counts, scale=2)
        objective = Objective(student.model, "causal", None, 1024)
        for m_pad, m_pack in zip(padded.micro, packed.micro):
            assert [real for _, real in m_pad] == [real for _, real in m_pack]
            for (b_pad, _), (b_pack, _) in zip(m_pad, m_pack):
                assert b_pack.packed is not None and b_pack.keys == b_pad.keys
                with torch.no_grad():
                    one, two = objective(b_pad, weights), objective(b_pack, weights)
                for key in one.sums:
                    torch.testing.assert_close(one.sums[key], two.sums[key], atol=1e-5, rtol=1e-5)


LOSSES = ("loss", "label_loss", "rationale_loss")


def test_fit_with_packing_matches_fit_without(tmp_path, make_config, make_splits, tiny_causal_dir, toy_task):
    logs = []
    for packing in (False, True):
        cfg = make_config(tmp_path / str(packing), tiny_causal_dir, method="step_by_step", max_steps=4,
                          eval_every=4, log_every=1, packing=packing, pack_tokens=64)  # fmt: skip
        run = train_on(cfg, toy_task, make_splits(6))
        logs.append([r for _, r in iter_jsonl(run / "train_log.jsonl") if "loss" in r])
    plain, packed = logs
    student = load_student(cfg.student, seed=0)
    enc = _rows(student, cfg.train, toy_task, make_splits(6)["train"])
    stream = StepStream(enc, cfg.train, student.tokenizer.pad_token_id, "causal")
    assert all(batch.packed is not None for micro in stream[0].micro for batch, _ in micro)
    assert [r["step"] for r in plain] == [r["step"] for r in packed] == [1, 2, 3, 4]
    for a, b in zip(plain, packed):
        for key in LOSSES:
            assert b[key] == pytest.approx(a[key], abs=1e-4), (a["step"], key)

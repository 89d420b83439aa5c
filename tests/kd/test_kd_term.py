"""The KD term on the trainer's real batches and target logits (tiny causal teacher and student)."""

from __future__ import annotations

import pytest
import torch

from stepdistill.kd.config import KDConfig
from stepdistill.kd.losses import dense_kd_loss, sparse_kd_loss
from stepdistill.kd.term import KDTerm, mix_task_losses, sparse_for_batch
from stepdistill.kd.topk import read_topk, target_key
from stepdistill.kd.whitebox import load_teacher, precompute_topk, topk_from_logits
from stepdistill.training.batching import collate, encode_examples
from stepdistill.training.config import StudentConfig, TrainConfig
from stepdistill.training.formatting import Pair
from stepdistill.training.models import load_student
from stepdistill.training.step import compute_loss

EXAMPLES = [("e1", "2 + 3", "5", "2 plus 3 makes 5."), ("e2", "7 - 4", "3", "Take 4 from 7.")]


def _setup(tiny_causal_dir):
    teacher, kind = load_teacher(str(tiny_causal_dir))
    student = load_student(StudentConfig(model=str(tiny_causal_dir)))
    student.model.eval()
    torch.manual_seed(0)
    with torch.no_grad():  # a student that differs from the teacher
        for p in student.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    tc = TrainConfig(method="step_by_step", alpha=0.5)
    pairs = [[Pair("predict: " + q, a, 0), Pair("explain: " + q, r, 1)] for _, q, a, r in EXAMPLES]
    batch = collate(encode_examples(student.tokenizer, pairs, tc, kind), student.tokenizer.pad_token_id, kind)
    batch.keys = [target_key(i, t) for i, *_ in EXAMPLES for t in ("label", "rationale")]
    return teacher, student, tc, batch, kind


def test_mix_task_losses_arithmetic():
    one = torch.tensor
    kd = {"label": one(0.4)}
    assert float(mix_task_losses("step_by_step", 0.5, 0.25, one(2.0), one(3.0), kd)) == pytest.approx(
        0.5 * (0.75 * 2.0 + 0.25 * 0.4) + 0.5 * 3.0
    )
    both = {"label": one(0.4), "rationale": one(1.0)}
    assert float(mix_task_losses("step_by_step", 0.5, 0.25, one(2.0), one(3.0), both)) == pytest.approx(
        0.5 * (0.75 * 2.0 + 0.25 * 0.4) + 0.5 * (0.75 * 3.0 + 0.25 * 1.0)
    )
    assert float(mix_task_losses("distill", 0.5, 0.25, one(2.0), one(0.0), kd)) == pytest.approx(1.6)


def test_whitebox_term_on_trainer_batch(tiny_causal_dir):
    teacher, student, tc, batch, kind = _setup(tiny_causal_dir)
    term = KDTerm(KDConfig(weight=0.3, temperature=2.0), teacher=teacher, teacher_kind=kind)
    parts = compute_loss(student.model, batch, kind, tc, keep_logits=True)
    total, terms = term(
        student.model, batch, parts.at_targets, tc.method, tc.alpha, parts.label, parts.rationale
    )
    # reference: full forward passes, label rows only (rows 0 and 2), shifted targets
    with torch.no_grad():
        s_full = student.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
        t_full = teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    mask = batch.labels[:, 1:] != -100
    mask[1] = False
    mask[3] = False
    ref_kd = dense_kd_loss(s_full, t_full, mask, temperature=2.0)
    assert float(terms["kd_loss"]) == pytest.approx(0.5 * float(ref_kd), rel=1e-4)  # alpha * KD_label
    assert float(terms["kd_ce_loss"]) == pytest.approx(0.5 * float(parts.label.detach()), rel=1e-6)
    expect = 0.5 * (0.7 * float(parts.label.detach()) + 0.3 * float(ref_kd)) + 0.5 * float(
        parts.rationale.detach()
    )
    assert float(total.detach()) == pytest.approx(expect, rel=1e-5)
    total.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.model.get_output_embeddings().weight.grad.abs().sum() > 0


def test_topk_file_term_and_missing_eos_row(tiny_causal_dir, tmp_path):
    teacher, student, tc, batch, kind = _setup(tiny_causal_dir)
    path = tmp_path / "train.topk.safetensors"
    precompute_topk(
        teacher, kind, [(batch.keys, batch.input_ids, batch.attention_mask, batch.labels)], path, k=8
    )
    cfg = KDConfig(source="topk_file", topk_file=str(path), tasks=["label", "rationale"], weight=0.5)
    term = KDTerm.from_config(cfg, student.tokenizer, student.model, "cpu")
    parts = compute_loss(student.model, batch, kind, tc, keep_logits=True)
    total, terms = term(
        student.model, batch, parts.at_targets, tc.method, tc.alpha, parts.label, parts.rationale
    )
    at = parts.at_targets
    with torch.no_grad():
        from stepdistill.kd.whitebox import teacher_target_logits

        sp = topk_from_logits(
            teacher_target_logits(teacher, batch.input_ids, batch.attention_mask, batch.labels, kind), 8
        )
    ref = sparse_kd_loss(at.logits, sp.ids, sp.logprobs.half().float(), at.task_ids == 1)
    assert float(terms["kd_rationale_loss"]) == pytest.approx(float(ref.detach()), rel=1e-4)
    assert torch.isfinite(total)

    # stored targets one token short (no eos row): that token is masked out, not an error
    f = read_topk(path)
    from stepdistill.kd.topk import write_topk

    short = {k: f.get(k)[:-1] for k in batch.keys}
    write_topk(tmp_path / "short.safetensors", short)
    ids, _, valid = sparse_for_batch(
        read_topk(tmp_path / "short.safetensors"), batch.keys, batch.labels, kind
    )
    assert ids.shape[0] == at.logits.shape[0] and int((~valid).sum()) == len(batch.keys)
    short[batch.keys[0]] = short[batch.keys[0]][:-1]
    write_topk(tmp_path / "bad.safetensors", short)
    from stepdistill.errors import DataError

    with pytest.raises(DataError, match="e1\tlabel' has"):
        sparse_for_batch(read_topk(tmp_path / "bad.safetensors"), batch.keys, batch.labels, kind)

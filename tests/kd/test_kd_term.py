"""The KD term on the trainer's real batches and target logits (tiny causal teacher and student)."""

from __future__ import annotations

import math

import pytest
import torch

from stepdistill.kd.config import KDConfig
from stepdistill.kd.losses import dense_kd_loss, sparse_kd_loss
from stepdistill.kd.term import KDTerm, sparse_for_batch
from stepdistill.kd.topk import read_topk, target_key
from stepdistill.kd.whitebox import load_teacher, precompute_topk, topk_from_logits
from stepdistill.training.batching import collate, encode_examples
from stepdistill.training.config import StudentConfig, TrainConfig
from stepdistill.training.formatting import Pair
from stepdistill.training.models import load_student
from stepdistill.training.step import target_logits

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
    enc = encode_examples(student.tokenizer, pairs, tc, kind, [i for i, *_ in EXAMPLES])
    batch = collate(enc, student.tokenizer.pad_token_id, kind)
    assert batch.keys == [target_key(i, t) for i, *_ in EXAMPLES for t in ("label", "rationale")]
    return teacher, student, tc, batch, kind, enc


def _by_hand(student, teacher, batch, temperature: float):
    """Per task: the student's CE token mean and the KD token mean from full logits of both models
    (shifted targets); label rows 0 and 2, rationale rows 1 and 3."""
    with torch.no_grad():
        s_full = student.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
        t_full = teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    targets = batch.labels[:, 1:]
    ce, kd = {}, {}
    for task, rows in (("label", [0, 2]), ("rationale", [1, 3])):
        mask = targets != -100
        mask[[r for r in range(4) if r not in rows]] = False
        ce[task] = float(torch.nn.functional.cross_entropy(s_full[mask], targets[mask]))
        kd[task] = float(dense_kd_loss(s_full, t_full, mask, temperature=temperature))
    return ce, kd


@pytest.mark.parametrize("tasks", [["label"], ["label", "rationale"]])
def test_whitebox_term_in_the_training_step(tiny_causal_dir, one_step, tasks):
    """The step's total is alpha * L_label + (1 - alpha) * L_rationale with (1 - w) * CE_t + w * KD_t
    for each KD task t, every term computed by hand from full forwards."""
    teacher, student, tc, batch, kind, enc = _setup(tiny_causal_dir)
    term = KDTerm(KDConfig(weight=0.25, temperature=2.0, tasks=tasks), teacher=teacher, teacher_kind=kind)
    terms, _ = one_step(student.model, kind, enc, tc, student.tokenizer.pad_token_id, kd_term=term)
    ce, kd = _by_hand(student, teacher, batch, 2.0)
    task_loss = {t: (0.75 * ce[t] + 0.25 * kd[t]) if t in tasks else ce[t] for t in ce}
    assert terms["loss"] == pytest.approx(0.5 * task_loss["label"] + 0.5 * task_loss["rationale"], rel=1e-5)
    assert terms["kd_loss"] == pytest.approx(sum(0.5 * kd[t] for t in tasks), rel=1e-4)  # alpha * KD_t
    assert terms["kd_ce_loss"] == pytest.approx(sum(0.5 * ce[t] for t in tasks), rel=1e-5)
    if len(tasks) == 2:
        assert terms["kd_label_loss"] == pytest.approx(kd["label"], rel=1e-4)
        assert terms["kd_rationale_loss"] == pytest.approx(kd["rationale"], rel=1e-4)
    assert all(p.grad is None for p in teacher.parameters())
    assert student.model.get_output_embeddings().weight.grad.abs().sum() > 0


def test_topk_file_term_and_missing_eos_row(tiny_causal_dir, tmp_path, one_step):
    teacher, student, tc, batch, kind, enc = _setup(tiny_causal_dir)
    path = tmp_path / "train.topk.safetensors"
    precompute_topk(
        teacher, kind, [(batch.keys, batch.input_ids, batch.attention_mask, batch.labels)], path, k=8
    )
    cfg = KDConfig(source="topk_file", topk_file=str(path), tasks=["label", "rationale"], weight=0.5)
    term = KDTerm.from_config(cfg, student.tokenizer, student.model, "cpu")
    terms, _ = one_step(student.model, kind, enc, tc, student.tokenizer.pad_token_id, kd_term=term)
    with torch.no_grad():
        from stepdistill.kd.whitebox import teacher_target_logits

        at = target_logits(student.model, batch, kind)
        sp = topk_from_logits(
            teacher_target_logits(teacher, batch.input_ids, batch.attention_mask, batch.labels, kind), 8
        )
        ref = sparse_kd_loss(at.logits, sp.ids, sp.logprobs.half().float(), at.task_ids == 1)
    assert terms["kd_rationale_loss"] == pytest.approx(float(ref), rel=1e-4)
    assert math.isfinite(terms["loss"])

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


def test_validation_loss_is_the_training_objective_with_kd(tiny_causal_dir, tmp_path, one_step):
    """selection.valid_loss with the run's KD term gives the step loss of the same rows (KD
    included); stored top-k targets exist for training rows only, so a row outside the file adds no
    KD there and keeps the (1 - w) share of its cross-entropy, where training would refuse it."""
    from stepdistill.kd.topk import write_topk
    from stepdistill.training.selection import valid_loss
    from stepdistill.training.step import Objective

    teacher, student, tc, batch, kind, enc = _setup(tiny_causal_dir)
    pad = student.tokenizer.pad_token_id
    term = KDTerm(KDConfig(weight=0.25, temperature=2.0, tasks=["label", "rationale"]), teacher, kind)
    terms, _ = one_step(student.model, kind, enc, tc, pad, kd_term=term, alpha=0.7)
    got = valid_loss(Objective(student.model, kind, term.for_unseen_rows()), enc, tc.method, 0.7, pad, 1)
    assert got == pytest.approx(terms["loss"], rel=1e-5) and terms["kd_loss"] > 0

    path = tmp_path / "train.topk.safetensors"  # targets of e1 only: e2 is a validation row
    precompute_topk(
        teacher, kind, [(batch.keys, batch.input_ids, batch.attention_mask, batch.labels)], path, k=8
    )
    stored = read_topk(path)
    write_topk(tmp_path / "e1.safetensors", {k: stored.get(k) for k in batch.keys[:2]})
    cfg = KDConfig(source="topk_file", topk_file=str(tmp_path / "e1.safetensors"), tasks=["label", "rationale"],
                   weight=0.25)  # fmt: skip
    topk = KDTerm.from_config(cfg, student.tokenizer, student.model, "cpu")
    plain = valid_loss(Objective(student.model, kind), enc[1:], tc.method, 0.7, pad, 4)
    unseen = valid_loss(
        Objective(student.model, kind, topk.for_unseen_rows()), enc[1:], tc.method, 0.7, pad, 4
    )
    assert unseen == pytest.approx(0.75 * plain, rel=1e-6)
    from stepdistill.errors import DataError

    with pytest.raises(DataError, match="no targets for 'e2\tlabel'"):
        valid_loss(Objective(student.model, kind, topk), enc[1:], tc.method, 0.7, pad, 4)

"""The one-pass gathered-logits loss against transformers' own full-logits loss."""

from __future__ import annotations

import pytest
import torch

from stepdistill.training.batching import collate, collate_step, encode_examples
from stepdistill.training.config import StudentConfig, TrainConfig
from stepdistill.training.formatting import build_pairs
from stepdistill.training.models import load_student
from stepdistill.training.step import compute_loss, forward_backward


def _student(request, kind):
    path = request.getfixturevalue("tiny_causal_dir" if kind == "causal" else "tiny_seq2seq_dir")
    student = load_student(StudentConfig(model=str(path)))
    student.model.eval()  # no dropout: both computations must see the same network
    return student


def _hf_loss(model, batch) -> float:
    with torch.no_grad():
        return float(
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
        )


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
@pytest.mark.parametrize("method", ["standard", "single_task", "rationale_input"])
def test_gathered_loss_equals_full_logits_loss(request, kind, method, toy_task, toy_annotations):
    student = _student(request, kind)
    cfg = TrainConfig(method=method)
    enc = encode_examples(student.tokenizer, build_pairs(toy_task, toy_annotations, cfg).examples, cfg, kind)
    batch = collate(enc, student.tokenizer.pad_token_id, kind)
    with torch.no_grad():
        parts = compute_loss(student.model, batch, kind, cfg, keep_logits=True)
    assert float(parts.total) == pytest.approx(_hf_loss(student.model, batch), abs=1e-5)
    n_targets = int((batch.labels != -100).sum())
    assert parts.at_targets.logits.shape == (n_targets, len(student.tokenizer))
    assert parts.n_label_tokens == n_targets and parts.n_rationale_tokens == 0


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_step_by_step_equals_two_separate_passes(request, kind, toy_task, toy_annotations):
    """One mixed batch gives alpha * L_label + (1 - alpha) * L_rationale of two separate batches."""
    student = _student(request, kind)
    cfg = TrainConfig(method="step_by_step", alpha=0.3)
    examples = build_pairs(toy_task, toy_annotations, cfg).examples
    enc = encode_examples(student.tokenizer, examples, cfg, kind)
    pad = student.tokenizer.pad_token_id
    mixed = collate(enc, pad, kind)
    assert mixed.task_ids.tolist() == [0, 1] * len(toy_annotations)
    label_only = collate([[ex[0]] for ex in enc], pad, kind)
    rationale_only = collate([[ex[1]] for ex in enc], pad, kind)
    l_label, l_rat = _hf_loss(student.model, label_only), _hf_loss(student.model, rationale_only)
    with torch.no_grad():
        parts = compute_loss(student.model, mixed, kind, cfg)
    assert float(parts.label) == pytest.approx(l_label, abs=1e-5)
    assert float(parts.rationale) == pytest.approx(l_rat, abs=1e-5)
    assert float(parts.total) == pytest.approx(0.3 * l_label + 0.7 * l_rat, abs=1e-5)
    assert float(parts.terms["label_loss"]) == pytest.approx(l_label, abs=1e-5)
    assert parts.n_label_tokens == int((label_only.labels != -100).sum())
    assert parts.n_rationale_tokens == int((rationale_only.labels != -100).sum())


def test_every_trainable_parameter_changes_after_one_step(tiny_causal_dir, toy_task, toy_annotations):
    student = load_student(StudentConfig(model=str(tiny_causal_dir)))
    cfg = TrainConfig(method="step_by_step")
    enc = encode_examples(
        student.tokenizer, build_pairs(toy_task, toy_annotations, cfg).examples, cfg, "causal"
    )
    batch = collate(enc, student.tokenizer.pad_token_id, "causal")
    params = {n: p.detach().clone() for n, p in student.model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(student.model.parameters(), lr=1e-3)
    compute_loss(student.model, batch, "causal", cfg).total.backward()
    opt.step()
    unchanged = [n for n, p in student.model.named_parameters() if torch.equal(p, params[n])]
    assert unchanged == []


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
@pytest.mark.parametrize("method", ["step_by_step", "standard"])
@pytest.mark.parametrize("budget", [None, 40])
def test_pass_by_pass_gradients_equal_one_batch(request, kind, method, budget, toy_task, toy_annotations):
    """Backpropagating pass by pass (per task, or under a token budget) gives the gradients and the
    logged losses of the whole step in one batch."""
    student = _student(request, kind)
    cfg = TrainConfig(method=method, alpha=0.3)
    enc = encode_examples(student.tokenizer, build_pairs(toy_task, toy_annotations, cfg).examples, cfg, kind)
    pad = student.tokenizer.pad_token_id
    whole = compute_loss(student.model, collate(enc, pad, kind), kind, cfg)
    whole.total.backward()
    expected = _grads(student.model)
    student.model.zero_grad(set_to_none=True)

    step = collate_step(enc, pad, kind, budget)
    assert len(step.passes) >= (2 if method == "step_by_step" else 1)
    if budget is not None:
        assert len(step.passes) > (2 if method == "step_by_step" else 1)
    parts = forward_backward(student.model, step, kind, cfg, backward=lambda loss: loss.backward())
    got = _grads(student.model)
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(
            got[name], grad, atol=1e-5, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}"
        )
    for key in ("loss", "label_loss", "rationale_loss"):
        assert float(parts.terms[key]) == pytest.approx(float(whole.terms[key]), abs=1e-5)
    assert (parts.n_label_tokens, parts.n_rationale_tokens) == (
        whole.n_label_tokens,
        whole.n_rationale_tokens,
    )

"""The training step's loss (StepStream -> _forward_backward -> Objective, the path `fit` runs)
against transformers' own full-logits loss and against hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from stepdistill.training.batching import StepCounts, collate, encode_examples
from stepdistill.training.config import StudentConfig, TrainConfig
from stepdistill.training.formatting import build_pairs
from stepdistill.training.models import load_student
from stepdistill.training.step import loss_terms, step_weights


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


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
@pytest.mark.parametrize("method", ["standard", "single_task", "rationale_input"])
def test_step_loss_equals_full_logits_loss(request, kind, method, toy_task, toy_annotations, one_step):
    student = _student(request, kind)
    cfg = TrainConfig(method=method)
    enc = encode_examples(student.tokenizer, build_pairs(toy_task, toy_annotations, cfg).examples, cfg, kind)
    pad = student.tokenizer.pad_token_id
    batch = collate(enc, pad, kind)
    terms, counts = one_step(student.model, kind, enc, cfg, pad)
    assert terms["loss"] == pytest.approx(_hf_loss(student.model, batch), abs=1e-5)
    n_targets = int((batch.labels != -100).sum())
    assert (counts.n_label_tokens, counts.n_rationale_tokens) == (n_targets, 0)
    # ...and its gradients are those of transformers' loss
    got = _grads(student.model)
    student.model.zero_grad(set_to_none=True)
    student.model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels
    ).loss.backward()
    for name, grad in _grads(student.model).items():
        torch.testing.assert_close(got[name], grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_step_by_step_equals_two_separate_passes(request, kind, toy_task, toy_annotations, one_step):
    """One step gives alpha * L_label + (1 - alpha) * L_rationale of two separate batches."""
    student = _student(request, kind)
    cfg = TrainConfig(method="step_by_step", alpha=0.3)
    examples = build_pairs(toy_task, toy_annotations, cfg).examples
    enc = encode_examples(student.tokenizer, examples, cfg, kind)
    pad = student.tokenizer.pad_token_id
    assert collate(enc, pad, kind).task_ids.tolist() == [0, 1] * len(toy_annotations)
    label_only = collate([[ex[0]] for ex in enc], pad, kind)
    rationale_only = collate([[ex[1]] for ex in enc], pad, kind)
    l_label, l_rat = _hf_loss(student.model, label_only), _hf_loss(student.model, rationale_only)
    terms, counts = one_step(student.model, kind, enc, cfg, pad)
    assert terms["label_loss"] == pytest.approx(l_label, abs=1e-5)
    assert terms["rationale_loss"] == pytest.approx(l_rat, abs=1e-5)
    assert terms["loss"] == pytest.approx(0.3 * l_label + 0.7 * l_rat, abs=1e-5)
    assert counts.n_label_tokens == int((label_only.labels != -100).sum())
    assert counts.n_rationale_tokens == int((rationale_only.labels != -100).sum())


def test_every_trainable_parameter_changes_after_one_step(
    tiny_causal_dir, toy_task, toy_annotations, one_step
):
    student = load_student(StudentConfig(model=str(tiny_causal_dir)))
    cfg = TrainConfig(method="step_by_step")
    enc = encode_examples(
        student.tokenizer, build_pairs(toy_task, toy_annotations, cfg).examples, cfg, "causal"
    )
    params = {n: p.detach().clone() for n, p in student.model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(student.model.parameters(), lr=1e-3)
    one_step(student.model, "causal", enc, cfg, student.tokenizer.pad_token_id)
    opt.step()
    unchanged = [n for n, p in student.model.named_parameters() if torch.equal(p, params[n])]
    assert unchanged == []


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
@pytest.mark.parametrize("method", ["step_by_step", "standard"])
@pytest.mark.parametrize("budget", [None, 40])
def test_pass_by_pass_gradients_equal_one_batch(
    request, kind, method, budget, toy_task, toy_annotations, one_step
):
    """Backpropagating pass by pass (per task, or under a token budget) gives the gradients and the
    logged losses of the whole step in one pass (train.max_tokens_per_pass changes no number)."""
    student = _student(request, kind)
    cfg = TrainConfig(method=method, alpha=0.3)
    enc = encode_examples(student.tokenizer, build_pairs(toy_task, toy_annotations, cfg).examples, cfg, kind)
    pad = student.tokenizer.pad_token_id
    whole, _ = one_step(student.model, kind, enc, cfg, pad, one_pass=True)  # every row in one pass
    expected = _grads(student.model)
    student.model.zero_grad(set_to_none=True)
    parts, _ = one_step(student.model, kind, enc, cfg.model_copy(update={"max_tokens_per_pass": budget}), pad)
    got = _grads(student.model)
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(
            got[name], grad, atol=1e-5, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}"
        )
    for key in ("loss", "label_loss", "rationale_loss"):
        assert parts[key] == pytest.approx(whole[key], abs=1e-5)


# Loss arithmetic on hand-built logits: four target tokens over a 3-word vocabulary, two label
# tokens (task 0) and two rationale tokens (task 1).
LOGITS = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 0.0]]
TARGETS = [0, 2, 2, 1]
TASKS = [0, 0, 1, 1]


def _ce(row: list[float], target: int) -> float:
    return math.log(sum(math.exp(x) for x in row)) - row[target]


CE = [_ce(r, t) for r, t in zip(LOGITS, TARGETS)]


def _weighted(method: str, alpha: float, tasks: list[int], counts: StepCounts, scale: float = 1.0):
    """The objective's sum: per-token CE times the step weight of its task (step.plain_target_loss)."""
    from stepdistill.training.chunked_ce import plain_target_loss

    w = step_weights(method, alpha, counts, scale)
    on = torch.where(torch.tensor(tasks) == 0, w.label, w.rationale)
    total, _, _ = plain_target_loss(torch.tensor(LOGITS), torch.tensor(TARGETS), on, torch.zeros(4), None)
    return float(total)


def test_step_by_step_mixes_the_two_task_means_with_alpha():
    counts = StepCounts(2, 2, 1, 1)
    label, rationale = (CE[0] + CE[1]) / 2, (CE[2] + CE[3]) / 2
    assert _weighted("step_by_step", 0.25, TASKS, counts) == pytest.approx(0.25 * label + 0.75 * rationale)
    sums = {"loss": 0.25 * label + 0.75 * rationale, "label": CE[0] + CE[1], "rationale": CE[2] + CE[3]}
    terms = loss_terms(sums, counts, "step_by_step", 0.25, 1.0)
    assert terms == pytest.approx({"loss": sums["loss"], "label_loss": label, "rationale_loss": rationale})


@pytest.mark.parametrize("method", ["standard", "distill", "single_task", "rationale_input"])
def test_other_methods_take_the_plain_token_mean(method):
    assert _weighted(method, 0.25, [0, 0, 0, 0], StepCounts(4, 0, 2, 2)) == pytest.approx(sum(CE) / 4)


def test_weights_of_a_part_use_the_counts_of_the_whole_step():
    """Tokens of a step split over processes: each process's share times the process count (DDP
    averages) adds up to the step's loss."""
    counts = StepCounts(n_label_tokens=2, n_rationale_tokens=6, n_label_rows=2, n_examples=2)
    w = step_weights("step_by_step", 0.4, counts, scale=2.0)
    assert (w.label, w.rationale, w.label_row) == pytest.approx((2 * 0.4 / 2, 2 * 0.6 / 6, 2 * 0.4 / 2))
    w1 = step_weights("standard", 0.4, StepCounts(5, 0, 5, 5), scale=1.0)
    assert (w1.label, w1.label_row) == pytest.approx((1 / 5, 1 / 5))


def test_alpha_one_ignores_rationales_but_keeps_the_graph():
    from stepdistill.training.chunked_ce import plain_target_loss

    logits = torch.tensor(LOGITS, requires_grad=True)
    w = step_weights("step_by_step", 1.0, StepCounts(2, 2, 1, 1))
    on = torch.where(torch.tensor(TASKS) == 0, w.label, w.rationale)
    plain_target_loss(logits, torch.tensor(TARGETS), on, torch.zeros(4), None)[0].backward()
    assert logits.grad[2:].abs().sum() == 0 and logits.grad[:2].abs().sum() > 0

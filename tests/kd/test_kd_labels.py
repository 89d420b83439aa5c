"""Label distributions over closed label sets: white-box scoring, soft-label loss, API log-probs."""

from __future__ import annotations

import math

import pytest
import torch

from stepdistill.errors import DataError
from stepdistill.kd.labels import (
    answer_position,
    api_label_distribution,
    candidate_batch,
    label_distribution,
    label_scores,
    soft_label_loss,
)
from stepdistill.kd.whitebox import load_teacher


def test_candidate_batch_layout():
    ids, mask, labels = candidate_batch([[1, 2], [3]], [[7], [8, 9]], "causal", pad_id=0)
    assert ids.tolist() == [[1, 2, 7, 0], [1, 2, 8, 9], [3, 7, 0, 0], [3, 8, 9, 0]]
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]]
    assert labels.tolist() == [
        [-100, -100, 7, -100],
        [-100, -100, 8, 9],
        [-100, 7, -100, -100],
        [-100, 8, 9, -100],
    ]
    ids, _, labels = candidate_batch([[1, 2]], [[7], [8, 9]], "seq2seq", pad_id=0)
    assert ids.tolist() == [[1, 2], [1, 2]] and labels.tolist() == [[7, -100], [8, 9]]


def test_whitebox_label_distribution_matches_hand_scoring(tiny_causal_dir, smol_tokenizer):
    tok = smol_tokenizer
    teacher, kind = load_teacher(str(tiny_causal_dir))
    prompts = [tok("predict: a lion is a", add_special_tokens=False)["input_ids"]]
    labels = [" tiger", " napkin", " big cat"]
    cands = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in labels]
    with torch.no_grad():
        scores = label_scores(teacher, kind, prompts, cands, tok.pad_token_id)
        # by hand: one unpadded forward per candidate, sum of the candidate tokens' log-probs
        hand = []
        for c in cands:
            seq = torch.tensor([prompts[0] + c])
            logp = torch.log_softmax(teacher(input_ids=seq).logits[0].float(), -1)
            n = len(prompts[0])
            hand.append(sum(float(logp[n - 1 + j, c[j]]) for j in range(len(c))))
    assert scores.shape == (1, 3)
    assert scores[0].tolist() == pytest.approx(hand, abs=1e-4)
    dist = label_distribution(scores)
    assert float(dist.sum()) == pytest.approx(1.0, abs=1e-6)
    z = sum(math.exp(h) for h in hand)
    assert dist[0].tolist() == pytest.approx([math.exp(h) / z for h in hand], rel=1e-4)


def test_soft_label_loss_hand_computed_and_trains_student_scores():
    student = torch.tensor([[0.0, math.log(2.0)]], requires_grad=True)  # q = [1/3, 2/3]
    teacher = torch.tensor([[0.5, 0.5]])
    loss = soft_label_loss(student, teacher)
    assert loss.item() == pytest.approx(-(0.5 * math.log(1 / 3) + 0.5 * math.log(2 / 3)))
    loss.backward()
    # d/ds CE = q - p = [1/3 - 1/2, 2/3 - 1/2]
    assert student.grad[0].tolist() == pytest.approx([-1 / 6, 1 / 6])


def _e(token, p, top=()):
    return {"token": token, "logprob": math.log(p), "top": [[t, math.log(q)] for t, q in top]}


def test_api_label_distribution_from_answer_position():
    labels = ["yes", "no", "it is not possible to tell"]
    entries = [
        _e("Because", 0.9),
        _e(" so", 0.9),
        _e(" So", 0.9),
        _e(" the", 0.9),
        _e(" answer", 0.9),
        _e(" is", 0.9),
        _e(" yes", 0.7, [(" yes", 0.7), (" no", 0.2), ("Yes", 0.05)]),
        _e(".", 0.9),
    ]
    pos = answer_position(entries, "So the answer is")
    assert pos == 6
    dist = api_label_distribution(entries[pos], labels)
    # yes: 0.7 + 0.05, no: 0.2, the third label gets the unlisted mass 1 - 0.95
    assert dist == pytest.approx([0.75, 0.2, 0.05])
    assert sum(dist) == pytest.approx(1.0)


def test_answer_position_skips_brackets_and_reports_missing_phrase():
    entries = [_e(t, 0.9) for t in ["So", " the", " answer", " is", " (", "b", ")", " bank", "."]]
    assert answer_position(entries, "So the answer is") == 5
    with pytest.raises(DataError, match="answer phrase 'The answer is' not in the completion"):
        answer_position(entries, "The answer is", where="svamp.jsonl")
    # a token shared by two labels splits its probability equally
    dist = api_label_distribution(_e(" ent", 0.8), ["entailment", "entirely", "neutral"])
    assert dist == pytest.approx([0.4, 0.4, 0.2])

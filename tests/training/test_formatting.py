"""Training pairs per method, skip counting, test-time sources, and length-grouped one-pass batches."""

from __future__ import annotations

import pytest

from stepdistill.schema import Annotation
from stepdistill.training.batching import IGNORE, collate, encode_examples, example_length, plan_epoch
from stepdistill.training.config import TrainConfig
from stepdistill.training.formatting import Pair, build_pairs, eval_source, split_single_task

ANN = Annotation(
    id="a",
    fields={"text": "What colour is a lime?"},
    gold="green",
    teacher_label="yellow",
    teacher_rationale="A lime is green. ",
)


@pytest.mark.parametrize(
    ("method", "label_source", "pairs"),
    [
        ("standard", "teacher", [Pair("predict: What colour is a lime?", "green", 0)]),
        ("distill", "gold", [Pair("predict: What colour is a lime?", "yellow", 0)]),
        (
            "step_by_step",
            "teacher",
            [
                Pair("predict: What colour is a lime?", "yellow", 0),
                Pair("explain: What colour is a lime?", "A lime is green.", 1),
            ],
        ),
        (
            "step_by_step",
            "gold",
            [
                Pair("predict: What colour is a lime?", "green", 0),
                Pair("explain: What colour is a lime?", "A lime is green.", 1),
            ],
        ),
        (
            "single_task",
            "gold",
            [Pair("What colour is a lime?", "A lime is green. So the answer is green", 0)],
        ),
        (
            "rationale_input",
            "teacher",
            [Pair("What colour is a lime?\nRationale: A lime is green.", "yellow", 0)],
        ),
    ],
)
def test_pairs_per_method(toy_task, method, label_source, pairs):
    out = build_pairs(toy_task, [ANN], TrainConfig(method=method, label_source=label_source))
    assert out.examples == [pairs] and out.ids == ["a"] and not out.skipped


def test_unusable_rows_are_skipped_and_counted(toy_task):
    rows = [
        ANN,
        Annotation(id="b", fields={"text": "x"}, gold=None, teacher_label="red", teacher_rationale="r"),
        Annotation(id="c", fields={"text": "y"}, gold="red", teacher_label=None, parse_error="no answer"),
    ]
    assert dict(build_pairs(toy_task, rows, TrainConfig(method="standard")).skipped) == {"no gold label": 1}
    out = build_pairs(toy_task, rows, TrainConfig(method="distill"))
    assert out.ids == ["a", "b"] and dict(out.skipped) == {"no parsed teacher label": 1}
    no_why = Annotation(id="d", fields={"text": "z"}, gold="red", teacher_label="red")
    out = build_pairs(toy_task, [no_why], TrainConfig(method="step_by_step"))
    assert out.n_pairs == 1 and dict(out.skipped) == {"rationale task: no teacher rationale": 1}


def test_eval_sources_and_single_task_parsing(toy_task):
    cfg = TrainConfig(method="step_by_step")
    assert eval_source(toy_task, ANN, cfg) == "predict: What colour is a lime?"
    assert eval_source(toy_task, ANN, TrainConfig(method="single_task")) == "What colour is a lime?"
    assert eval_source(toy_task, ANN, TrainConfig(method="rationale_input")).endswith(
        "\nRationale: A lime is green."
    )
    assert split_single_task(toy_task, "Limes are green. So the answer is green.") == (
        "Limes are green.",
        "green",
    )
    assert split_single_task(toy_task, "no phrase here") == ("no phrase here", None)


def test_batch_holds_label_and_rationale_rows_with_loss_on_targets_only(
    smol_tokenizer, toy_task, toy_annotations
):
    cfg = TrainConfig(method="step_by_step")
    enc = encode_examples(
        smol_tokenizer, build_pairs(toy_task, toy_annotations[:2], cfg).examples, cfg, "causal"
    )
    batch = collate(enc, smol_tokenizer.pad_token_id, "causal")
    assert batch.task_ids.tolist() == [0, 1, 0, 1] and batch.n_examples == 2
    row = enc[0][0]
    n = len(row.source) + len(row.target)
    assert batch.input_ids[0, :n].tolist() == row.source + row.target
    assert batch.labels[0, :n].tolist() == [IGNORE] * len(row.source) + row.target
    assert row.target[-1] == smol_tokenizer.eos_token_id
    assert smol_tokenizer.decode(row.target[:-1]) == "yellow"
    assert batch.attention_mask[0].sum() == n and (batch.labels[0, n:] == IGNORE).all()
    s2s = collate(
        encode_examples(
            smol_tokenizer, build_pairs(toy_task, toy_annotations[:2], cfg).examples, cfg, "seq2seq"
        ),
        smol_tokenizer.pad_token_id,
        "seq2seq",
    )
    assert s2s.labels.shape[0] == 4 and (s2s.labels[1] != IGNORE).sum() == len(enc[0][1].target)


def test_truncation_keeps_separator_and_eos(smol_tokenizer, toy_task, toy_annotations):
    cfg = TrainConfig(method="step_by_step", max_input_length=4, max_target_length=3)
    enc = encode_examples(
        smol_tokenizer, build_pairs(toy_task, toy_annotations[:1], cfg).examples, cfg, "causal"
    )
    sep = smol_tokenizer("\n", add_special_tokens=False)["input_ids"]
    for row in enc[0]:
        assert len(row.source) == 4 and row.source[-len(sep) :] == sep
        assert len(row.target) <= 3 and row.target[-1] == smol_tokenizer.eos_token_id


def test_length_grouping_is_deterministic_and_groups_lengths():
    lengths = [5, 50, 6, 51, 7, 52, 8, 53]
    plan = plan_epoch(lengths, 2, seed=1, epoch=0, group_by_length=True)
    assert plan == plan_epoch(lengths, 2, seed=1, epoch=0, group_by_length=True)
    assert plan != plan_epoch(lengths, 2, seed=1, epoch=1, group_by_length=True)
    assert sorted(i for b in plan for i in b) == list(range(8))
    # Each batch holds two short or two long examples, and the longest batch comes first.
    assert all(len({lengths[i] > 20 for i in b}) == 1 for b in plan)
    assert 7 in plan[0]
    flat = plan_epoch(lengths, 2, seed=1, epoch=0, group_by_length=False)
    assert sorted(i for b in flat for i in b) == list(range(8))


def test_example_length_is_its_longest_row(smol_tokenizer, toy_task, toy_annotations):
    cfg = TrainConfig(method="step_by_step")
    enc = encode_examples(
        smol_tokenizer, build_pairs(toy_task, toy_annotations[:1], cfg).examples, cfg, "causal"
    )
    assert example_length(enc[0]) == max(len(r.source) + len(r.target) for r in enc[0])

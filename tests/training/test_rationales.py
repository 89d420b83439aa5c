"""Many rationales per example (train.rationales, training/rationales.py): which samples train, what
each weighs in the loss, what metrics.json counts, and that `one` is today's training."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from stepdistill.data.io import iter_jsonl, write_jsonl
from stepdistill.errors import ConfigError
from stepdistill.schema import Annotation
from stepdistill.train import train_on
from stepdistill.training import rationales as rats
from stepdistill.training.batching import IGNORE, collate, encode_examples, step_counts
from stepdistill.training.config import TrainConfig
from stepdistill.training.formatting import LABEL_TASK, RATIONALE_TASK, Pair, build_pairs
from stepdistill.training.models import load_student
from stepdistill.training.selection import valid_loss
from stepdistill.training.step import Objective, step_weights


def _sample(rationale: str | None, label: str | None, error: str | None = None) -> dict:
    raw = f"{rationale} So the answer is {label}." if rationale else "???"
    return {"raw": raw, "label": label, "rationale": rationale, "parse_error": error}


def _hand_built() -> list[dict]:
    """Three annotated examples as `annotate.samples: 5` writes them (the vote on top)."""
    cherry = [
        _sample("A ripe cherry is red.", "red"),
        _sample("a ripe  CHERRY is red.", "red"),  # duplicate of the first once normalised
        _sample("Cherries are red when ripe, like most berries.", "red"),
        _sample("Cherries are dark.", "purple"),
        _sample(None, None, "no answer phrase"),  # never trained on
    ]
    lime = [  # the vote (green) is wrong: gold is yellow
        _sample("Limes are green.", "green"),
        _sample("A lime is green.", "green"),
        _sample("Some limes ripen yellow.", "yellow"),
    ]
    return [
        {"id": "cherry", "fields": {"text": "What colour is a cherry?"}, "gold": "red", "teacher_label": "red",
         "teacher_rationale": "A ripe cherry is red.", "teacher_raw": cherry[0]["raw"], "teacher_model": "t",
         "parse_error": None, "teacher_samples": cherry, "teacher_logprobs": None, "extra": {"agreement": 0.6}},
        {"id": "lime", "fields": {"text": "What colour is a lime?"}, "gold": "yellow", "teacher_label": "green",
         "teacher_rationale": "Limes are green.", "teacher_raw": lime[0]["raw"], "teacher_model": "t",
         "parse_error": None, "teacher_samples": lime, "teacher_logprobs": None,
         "extra": {"agreement": 2 / 3}},
        {"id": "plum", "fields": {"text": "What colour is a plum?"}, "gold": "purple", "teacher_label": None,
         "teacher_rationale": None, "teacher_raw": "???", "teacher_model": "t", "parse_error": "no answer phrase",
         "teacher_samples": [_sample(None, None, "no answer phrase")] * 2, "teacher_logprobs": None},
    ]  # fmt: skip


@pytest.fixture
def annotated(tmp_path) -> list[Annotation]:
    path = tmp_path / "train.jsonl"
    write_jsonl(path, _hand_built())
    return [Annotation.from_dict(row) for _, row in iter_jsonl(path)]


def _rationales(formatted, task_id: int = RATIONALE_TASK) -> dict[str, list[tuple[str, float]]]:
    return {
        i: [(p.target, p.weight) for p in ex if p.task_id == task_id]
        for i, ex in zip(formatted.ids, formatted.examples)
    }


def test_gold_labels_agreeing_trains_on_the_distinct_agreeing_parsed_samples(toy_task, annotated):
    cfg = TrainConfig(
        method="step_by_step", label_source="gold", rationales="agreeing", rationale_order="as_sampled"
    )
    out = build_pairs(toy_task, annotated, cfg)
    assert _rationales(out) == {
        "cherry": [("A ripe cherry is red.", 0.5), ("Cherries are red when ripe, like most berries.", 0.5)],
        "lime": [("Some limes ripen yellow.", 1.0)],  # the one sample that reached gold
        "plum": [],  # nothing parsed: the label task alone
    }
    counts = out.counts()
    assert counts["rationales_per_example"] == {"0": 1, "1": 1, "2": 1}
    assert counts["rationale_rows"] == 3 and counts["rationale_share"] == round(2 / 3, 6)
    assert counts["skipped"] == {"rationale task: no parsed teacher sample": 1}
    assert counts["rationale_tokens"] == {"n": 3, "median": 5, "p90": 8, "max": 8}  # words: no tokenizer
    assert counts["rationale_fallback"] == 0


def test_teacher_labels_agree_with_the_vote_and_all_takes_every_distinct_parsed_sample(toy_task, annotated):
    vote = TrainConfig(method="step_by_step", label_source="teacher", rationales="agreeing")
    out = build_pairs(toy_task, annotated, vote)
    assert _rationales(out) == {
        # shortest first (the default order)
        "cherry": [("A ripe cherry is red.", 0.5), ("Cherries are red when ripe, like most berries.", 0.5)],
        "lime": [("Limes are green.", 0.5), ("A lime is green.", 0.5)],
    }
    assert out.counts()["vote_agreement"] == round((0.6 + 2 / 3) / 2, 6)
    every = build_pairs(toy_task, annotated, vote.model_copy(update={"rationales": "all"}))
    assert [r for r, _ in _rationales(every)["cherry"]] == [
        "Cherries are dark.", "A ripe cherry is red.", "Cherries are red when ripe, like most berries.",
    ]  # fmt: skip
    assert {w for _, w in _rationales(every)["cherry"]} == {1 / 3}
    # gold_filter keeps only the samples whose own label is gold's
    gold_all = TrainConfig(method="step_by_step", label_source="gold", rationales="all", gold_filter=True)
    assert [r for r, _ in _rationales(build_pairs(toy_task, annotated, gold_all))["lime"]] == [
        "Some limes ripen yellow."
    ]
    # rationale weighting: every row weighs 1
    per_row = build_pairs(toy_task, annotated, vote.model_copy(update={"rationale_weighting": "rationale"}))
    assert {w for rows in _rationales(per_row).values() for _, w in rows} == {1.0}


def test_order_cap_and_max_tokens(toy_task, annotated):
    base = TrainConfig(method="step_by_step", label_source="gold", rationales="agreeing")
    first = build_pairs(
        toy_task, annotated, base.model_copy(update={"max_rationales": 1, "rationale_order": "as_sampled"})
    )
    short = build_pairs(toy_task, annotated, base.model_copy(update={"max_rationales": 1}))
    assert _rationales(first)["cherry"] == _rationales(short)["cherry"] == [("A ripe cherry is red.", 1.0)]
    longest_first = [_hand_built()[0]]
    longest_first[0]["teacher_samples"] = longest_first[0]["teacher_samples"][::-1]
    rows = [Annotation.from_dict(r) for r in longest_first]
    as_sampled = build_pairs(
        toy_task, rows, base.model_copy(update={"max_rationales": 1, "rationale_order": "as_sampled"})
    )
    assert _rationales(as_sampled)["cherry"] == [("Cherries are red when ripe, like most berries.", 1.0)]
    assert _rationales(build_pairs(toy_task, rows, base.model_copy(update={"max_rationales": 1})))[
        "cherry"
    ] == [("a ripe  CHERRY is red.", 1.0)]  # reversed order: the first seen of the two duplicates
    # rationale_max_tokens drops what is longer (counted here in words by a stand-in tokenizer)
    capped = build_pairs(
        toy_task, annotated, base.model_copy(update={"rationale_max_tokens": 4}), lambda t: len(t.split())
    )
    assert _rationales(capped) == {"cherry": [], "lime": [("Some limes ripen yellow.", 1.0)], "plum": []}
    counts = capped.counts()
    assert counts["rationales_over_max_tokens"] == 2 and counts["rationales_per_example"] == {"0": 2, "1": 1}
    assert counts["skipped"]["rationale task: every rationale over train.rationale_max_tokens=4"] == 1


def test_a_cap_below_every_shortest_rationale_is_refused_with_the_numbers(toy_task, annotated):
    cfg = TrainConfig(
        method="step_by_step", label_source="gold", rationales="agreeing", rationale_max_tokens=3
    )
    words = lambda t: len(t.split())  # noqa: E731
    with pytest.raises(ConfigError, match=r"rationale_max_tokens=3 .*shortest of all is 4 tokens"):
        rats.check_cap(toy_task, annotated, cfg, lambda a: a.gold, words)
    rats.check_cap(
        toy_task, annotated, cfg.model_copy(update={"rationale_max_tokens": 4}), lambda a: a.gold, words
    )


def test_the_refusal_comes_before_the_student_loads(tmp_path, annotated, tiny_causal_dir, monkeypatch):
    from stepdistill import train as train_command
    from stepdistill.config import config_from_dict

    path = tmp_path / "data" / "train.jsonl"
    write_jsonl(
        path, [{"id": r["id"], "text": r["fields"]["text"], "label": r["gold"]} for r in _hand_built()]
    )
    monkeypatch.setattr(
        "stepdistill.training.loop.load_student", lambda *a, **k: pytest.fail("the student was loaded")
    )
    monkeypatch.setattr(
        "stepdistill.data.splits.load_splits",
        lambda *a, **k: {"train": annotated, "valid": annotated, "test": annotated},
    )
    cfg = config_from_dict({
        "name": "capped", "out_dir": str(tmp_path / "runs"),
        "task": {"name": "generic", "input_template": "{text}", "label_field": "label"},
        "data": {"train": str(path)}, "student": {"model": str(tiny_causal_dir)},
        "train": {"method": "step_by_step", "label_source": "gold", "rationales": "agreeing",
                  "rationale_max_tokens": 2},
    })  # fmt: skip
    with pytest.raises(ConfigError, match=r"rationale_max_tokens=2 is below the shortest rationale"):
        train_command.train(cfg)
    assert not (tmp_path / "runs" / "capped").exists()


def test_agreeing_on_annotations_without_samples_falls_back_and_says_so(toy_task, toy_annotations):
    cfg = TrainConfig(method="step_by_step", label_source="gold", rationales="agreeing")
    with pytest.warns(rats.RationaleFallback) as said:
        out = build_pairs(toy_task, toy_annotations, cfg)
    assert len(said) == 1
    one = build_pairs(toy_task, toy_annotations, TrainConfig(method="step_by_step", label_source="gold"))
    assert out.examples == one.examples and out.counts()["rationale_fallback"] == len(toy_annotations)


@pytest.mark.parametrize("method", ["single_task", "answer_first"])
def test_single_sequence_methods_get_one_row_per_rationale(toy_task, annotated, method):
    cfg = TrainConfig(method=method, label_source="gold", rationales="agreeing", rationale_order="as_sampled")
    out = build_pairs(toy_task, annotated, cfg)
    cherry = _rationales(out, LABEL_TASK)["cherry"]
    assert [w for _, w in cherry] == [0.5, 0.5]
    if method == "single_task":
        assert cherry[0][0] == "A ripe cherry is red. So the answer is red"
    else:
        assert cherry[1][0] == "red\nCherries are red when ripe, like most berries."
    assert out.ids == ["cherry", "lime"] and out.skipped == {"no parsed teacher sample": 1}


def _token_ce(student, rows) -> list[torch.Tensor]:
    """Per-token cross-entropy of each encoded row on its own (hand computation, no batching)."""
    out = []
    for e in rows:
        batch = collate([[e]], student.tokenizer.pad_token_id, student.kind)
        with torch.no_grad():
            if student.kind == "causal":
                logits = student.model(input_ids=batch.input_ids).logits[0, :-1]
                labels = batch.labels[0, 1:]
            else:
                logits = student.model(input_ids=batch.input_ids, labels=batch.labels).logits[0]
                labels = batch.labels[0]
        keep = labels != IGNORE
        out.append(F.cross_entropy(logits[keep].float(), labels[keep], reduction="none"))
    return out


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_example_weighting_gives_each_example_the_same_rationale_weight(
    toy_task, annotated, kind, tiny_causal_dir, tiny_seq2seq_dir
):
    """The production loss (selection.valid_loss: the whole split as one step) against the formula
    alpha * sum_label CE / T_label + (1 - alpha) * sum_r w_r sum_t CE / sum_r w_r T_r."""
    from stepdistill.training.config import StudentConfig

    model_dir = tiny_causal_dir if kind == "causal" else tiny_seq2seq_dir
    student = load_student(StudentConfig(model=str(model_dir)), seed=0)
    for weighting in ("example", "rationale"):
        tc = TrainConfig(method="step_by_step", label_source="gold", rationales="agreeing", alpha=0.3,
                         rationale_weighting=weighting)  # fmt: skip
        formatted = build_pairs(toy_task, annotated, tc, rats.token_counter(student.tokenizer))
        encoded = encode_examples(student.tokenizer, formatted.examples, tc, kind)
        rows = [e for ex in encoded for e in ex]
        student.model.eval()
        ce = _token_ce(student, rows)
        n_rows = {"cherry": 2, "lime": 1}  # rationale rows per example (see the first test)
        owners = [i for i, ex in zip(formatted.ids, formatted.examples) for _ in ex]
        w = [1 / n_rows[o] if weighting == "example" and e.task_id == RATIONALE_TASK else 1.0
             for o, e in zip(owners, rows)]  # fmt: skip
        lab = [i for i, e in enumerate(rows) if e.task_id == LABEL_TASK]
        rat = [i for i, e in enumerate(rows) if e.task_id == RATIONALE_TASK]
        label_loss = sum(float(ce[i].sum()) for i in lab) / sum(len(ce[i]) for i in lab)
        rat_loss = sum(w[i] * float(ce[i].sum()) for i in rat) / sum(w[i] * len(ce[i]) for i in rat)
        expected = 0.3 * label_loss + 0.7 * rat_loss
        objective = Objective(student.model, kind).eval()  # no dropout
        pad = student.tokenizer.pad_token_id
        loss = valid_loss(objective, encoded, tc.method, tc.alpha, pad, 2)
        assert loss == pytest.approx(expected, rel=1e-5)
        # and the per-pass path (the training step's) gives the same total
        weights = step_weights(tc.method, tc.alpha, step_counts([[e] for e in rows]))
        with torch.no_grad():
            total = sum(float(objective(collate([[e]], pad, kind), weights).total) for e in rows)
        assert total == pytest.approx(expected, rel=1e-5)


def _weights(run):
    return load_file(run / "best" / "model.safetensors")


@pytest.mark.slow
def test_one_ignores_samples_and_a_single_agreeing_sample_is_todays_training(
    tmp_path, make_config, make_splits, tiny_causal_dir, toy_task
):
    """`one` on annotations with samples trains exactly as on the same annotations without them, and
    `agreeing` where each example's only distinct agreeing sample is its chosen rationale gives the
    same weights bit for bit (one row of weight 1 per example: today's step)."""
    plain = make_splits(6)
    with_samples = make_splits(6)
    for split in with_samples.values():
        for ann in split:
            wrong = _sample("It looks grey to me.", "grey")
            ann.teacher_samples = [_sample(ann.teacher_rationale, ann.teacher_label), wrong,
                                   _sample(ann.teacher_rationale.upper(), ann.teacher_label)]  # fmt: skip
    today = train_on(make_config(tmp_path, tiny_causal_dir, name="today"), toy_task, plain)
    one = train_on(make_config(tmp_path, tiny_causal_dir, name="one"), toy_task, with_samples)
    agreeing = train_on(make_config(tmp_path, tiny_causal_dir, name="agree", rationales="agreeing", label_source="gold"),
                   toy_task, with_samples)  # fmt: skip
    a, b, c = _weights(today), _weights(one), _weights(agreeing)
    for key in a:
        assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key]), key
    metrics = json.loads((agreeing / "metrics.json").read_text())["train"]
    assert metrics["rationales_per_example"] == {"1": 6} and metrics["rationale_rows"] == 6
    assert metrics["rationale_tokens"]["n"] == 6 and metrics["rationale_share"] == 1.0


def test_several_rationales_train_and_are_counted(
    tmp_path, make_config, make_splits, tiny_causal_dir, toy_task
):
    splits = make_splits(6)
    for i, ann in enumerate(splits["train"]):
        extra = [_sample(f"Everyone knows it is {ann.gold}, {j}.", ann.gold) for j in range(i % 3)]
        ann.teacher_samples = [_sample(ann.teacher_rationale, ann.teacher_label), *extra]
    run = train_on(make_config(tmp_path, tiny_causal_dir, name="many", rationales="agreeing", label_source="gold"),
              toy_task, splits)  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())["train"]
    assert metrics["rationales_per_example"] == {"1": 2, "2": 2, "3": 2}
    assert metrics["rationale_rows"] == 12 and metrics["rationale_examples"] == 6
    log = [r for _, r in iter_jsonl(run / "train_log.jsonl") if "rationale_loss" in r]
    assert log and all(r["rationale_loss"] > 0 for r in log)


def test_pair_weight_defaults_to_one():
    assert Pair("a", "b", 0).weight == 1.0 and rats.row_weight(4, "example") == 0.25
    assert rats.row_weight(4, "rationale") == 1.0 and rats.row_weight(1, "example") == 1.0


def test_rows_without_any_teacher_answer_are_no_fallback(toy_task, toy_annotations):
    """An unannotated split (no rationale, no samples) under agreeing trains labels and says nothing."""
    import warnings

    for ann in toy_annotations:
        ann.teacher_label = ann.teacher_rationale = None
    cfg = TrainConfig(method="step_by_step", label_source="gold", rationales="agreeing")
    with warnings.catch_warnings():
        warnings.simplefilter("error", rats.RationaleFallback)
        out = build_pairs(toy_task, toy_annotations, cfg)
    assert out.counts()["rationale_fallback"] == 0 and out.counts()["label_examples"] == len(toy_annotations)


def test_packed_passes_weigh_rationale_rows_like_padded_ones(toy_task, annotated, tiny_causal_dir):
    """train.packing: the row weights follow each row into its token buffer (same loss as padded)."""
    from stepdistill.training.config import StudentConfig

    student = load_student(StudentConfig(model=str(tiny_causal_dir)), seed=0)
    tc = TrainConfig(method="step_by_step", label_source="gold", rationales="all", alpha=0.4)
    formatted = build_pairs(toy_task, annotated, tc, rats.token_counter(student.tokenizer))
    encoded = encode_examples(student.tokenizer, formatted.examples, tc, "causal")
    weights = step_weights(tc.method, tc.alpha, step_counts(encoded))
    objective = Objective(student.model, "causal").eval()
    pad = student.tokenizer.pad_token_id
    padded, packed = collate(encoded, pad, "causal"), collate(encoded, pad, "causal", pack_tokens=64)
    assert packed.packed is not None and packed.row_weights is not None
    with torch.no_grad():
        a, b = objective(padded, weights), objective(packed, weights)
    assert float(b.total) == pytest.approx(float(a.total), rel=1e-5)
    assert float(b.sums["rationale"]) == pytest.approx(float(a.sums["rationale"]), rel=1e-5)

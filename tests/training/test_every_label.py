"""Step-by-step uses every label it has: the label task on every labelled example, the rationale task
on every example with a usable rationale (counted separately in metrics.json)."""

from __future__ import annotations

import json

from stepdistill.annotate import apply_gold_filter
from stepdistill.train import train_on
from stepdistill.training.config import TrainConfig
from stepdistill.training.formatting import LABEL_TASK, RATIONALE_TASK, Pair, build_pairs


def _mixed_rows(make_splits):
    """6 examples: teacher wrong on toy-1 and toy-4, no rationale on toy-2 (parse failure)."""
    rows = make_splits(6)["train"]
    rows[1].teacher_label = rows[4].teacher_label = "grey"
    rows[2].teacher_label = rows[2].teacher_rationale = None
    rows[2].parse_error = "no answer phrase"
    return rows


def test_gold_step_by_step_keeps_every_label_and_filters_rationales(toy_task, make_splits):
    rows = _mixed_rows(make_splits)
    standard = build_pairs(toy_task, rows, TrainConfig(method="standard"))
    cfg = TrainConfig(method="step_by_step", label_source="gold", gold_filter=True)
    sbs = build_pairs(toy_task, rows, cfg)
    assert standard.counts()["label_examples"] == 6 and sbs.counts()["label_examples"] == 6
    assert sbs.ids == standard.ids == [f"toy-{i}" for i in range(6)]
    # The label pairs are exactly standard fine-tuning's pairs.
    assert [p for ex in sbs.examples for p in ex if p.task_id == LABEL_TASK] == [
        p for ex in standard.examples for p in ex
    ]
    rationale_ids = [
        i for i, ex in zip(sbs.ids, sbs.examples) if any(p.task_id == RATIONALE_TASK for p in ex)
    ]
    assert rationale_ids == ["toy-0", "toy-3", "toy-5"]
    assert sbs.examples[0][1] == Pair("explain: What colour is a banana?", "A ripe banana is yellow.", 1)
    counts = sbs.counts()
    assert {k: counts[k] for k in ("label_examples", "rationale_examples", "skipped")} == {
        "label_examples": 6,
        "rationale_examples": 3,
        "skipped": {
            "rationale task: rationale's teacher label disagrees with gold": 2,
            "rationale task: no teacher rationale": 1,
        },
    }
    assert counts["rationales_per_example"] == {"0": 3, "1": 3} and counts["rationale_rows"] == 3
    assert counts["rationale_share"] == 0.5 and counts["train_rows"] == 6
    # Without the filter every parsed rationale is used; teacher labels lose the unparsed example.
    assert (
        build_pairs(toy_task, rows, TrainConfig(method="step_by_step", label_source="gold")).counts()[
            "rationale_examples"
        ]
        == 5
    )
    teacher = build_pairs(toy_task, rows, TrainConfig(method="step_by_step", label_source="teacher"))
    assert teacher.counts()["label_examples"] == 5 and len(teacher.examples) == 5


def test_annotation_gold_filter_gives_the_same_counts(toy_task, make_splits):
    """Rationales dropped by `annotate.gold_filter` (label and rationale set to None) still leave the
    gold label to train on."""
    rows = _mixed_rows(make_splits)
    assert sum(apply_gold_filter(toy_task, r) for r in rows) == 2
    sbs = build_pairs(toy_task, rows, TrainConfig(method="step_by_step", label_source="gold"))
    assert sbs.counts()["label_examples"] == 6 and sbs.counts()["rationale_examples"] == 3


def test_gold_filtered_run_trains_labels_on_as_many_examples_as_standard(
    tmp_path, make_config, make_splits, tiny_causal_dir, toy_task
):
    rows = _mixed_rows(make_splits)
    splits = {"train": rows, "valid": rows[:2], "test": rows[:2]}
    metrics = {}
    for name, train in {
        "standard": {"method": "standard"},
        "sbs": {"method": "step_by_step", "label_source": "gold", "gold_filter": True},
    }.items():
        cfg = make_config(tmp_path, tiny_causal_dir, name=name, max_steps=2, eval_every=2, **train)
        metrics[name] = json.loads((train_on(cfg, toy_task, splits) / "metrics.json").read_text())["train"]
    assert metrics["standard"]["label_examples"] == metrics["sbs"]["label_examples"] == 6
    assert metrics["standard"]["rationale_examples"] == 0
    assert metrics["sbs"]["rationale_examples"] == 3 and metrics["sbs"]["examples"] == 6
    # Two steps of 4 = one epoch of the 6 examples, for both methods.
    assert metrics["sbs"]["examples_seen"] == metrics["standard"]["examples_seen"] == 6

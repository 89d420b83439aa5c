"""The user journey on one config, offline: annotate -> train (two methods) -> evaluate -> predict
-> report, with no file edited in between; parse health, label sources and config hints.

The teacher here is the `precomputed` backend (answers from a file); tests/test_journey_llama.py
plays the same journey against a real llama.cpp server.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from stepdistill.cli import main
from stepdistill.data.io import iter_jsonl, read_annotations, write_jsonl

REVIEWS = [
    ("Loved every minute of it.", "positive"),
    ("A waste of two hours.", "negative"),
    ("Brilliant acting and a great story.", "positive"),
    ("Boring, slow and far too long.", "negative"),
    ("I would watch it again tomorrow.", "positive"),
    ("The worst film this year.", "negative"),
    ("Charming and funny.", "positive"),
    ("Dull from start to end.", "negative"),
    ("A wonderful surprise.", "positive"),
    ("I walked out after an hour.", "negative"),
]


def last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


@pytest.fixture
def journey(tmp_path, tiny_causal_dir, monkeypatch):
    """The files a user writes: reviews.csv, reviews_test.csv, sentiment.yaml, sentiment-run.yaml."""
    monkeypatch.chdir(tmp_path)
    for name, rows in [("reviews.csv", REVIEWS), ("reviews_test.csv", REVIEWS[:4])]:
        with open(name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["review_id", "text", "sentiment"])
            w.writerows([f"{name[:-4]}-{i}", text, label] for i, (text, label) in enumerate(rows))
    Path("sentiment.yaml").write_text(
        'input_template: "Review: {text}\\nIs this review positive or negative?"\n'
        "label_field: sentiment\nid_field: review_id\nlabels: [positive, negative]\nmetric: normalized\n"
    )
    # The teacher's answers, lower-case phrase included; one wrong, one without the phrase.
    answers = {
        f"reviews-{i}": f"It is {label}, so the answer is {label}." for i, (_, label) in enumerate(REVIEWS)
    }
    answers["reviews-1"] = "It sounds happy. So the answer is positive."
    answers["reviews-3"] = "Hard to say."
    answers.update(
        {f"reviews_test-{i}": f"So the answer is {label}." for i, (_, label) in enumerate(REVIEWS[:4])}
    )
    write_jsonl("teacher.jsonl", [{"id": k, "completion": v} for k, v in answers.items()])
    cfg = {
        "name": "sentiment",
        "task": {"name": "generic", "spec": "sentiment.yaml"},
        "data": {"train": "reviews.csv", "test": "reviews_test.csv", "valid_fraction": 0.2},
        "teacher": {"backend": "precomputed", "path": "teacher.jsonl"},
        "annotate": {"splits": ["train", "test"], "progress": False},
        "student": {"model": str(tiny_causal_dir)},
        "train": {"max_steps": 2, "eval_every": 2, "batch_size": 4, "lr": 1e-3, "max_target_length": 16},
        "eval": {"max_new_tokens": 3},
    }
    Path("sentiment-run.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return tmp_path


@pytest.mark.slow
def test_annotate_train_evaluate_predict_report_on_one_config(journey, capsys):
    assert main(["annotate", "sentiment-run.yaml"]) == 0
    assert last_line(capsys) == (
        "annotate: 8 train, 4 test, 2 valid (carved from train, not annotated) examples; 11 annotated, "
        "1 not parsed, 0 unanswered, teacher accuracy 83.33% -> runs/sentiment/annotations"
    )
    folder = Path("runs/sentiment/annotations")
    # Validation is carved once (10 -> 8 + 2) and remembered in valid.jsonl.
    train_rows, valid_rows = (
        read_annotations(folder / "train.jsonl"),
        read_annotations(folder / "valid.jsonl"),
    )
    assert (len(train_rows), len(valid_rows)) == (8, 2)
    assert {r.id for r in train_rows} | {r.id for r in valid_rows} == {f"reviews-{i}" for i in range(10)}
    assert all(r.teacher_raw is None for r in valid_rows)
    # "so the answer is" in lower case parses; the answer without the phrase does not.
    expected = {f"reviews-{i}": label for i, (_, label) in enumerate(REVIEWS)}
    expected.update({"reviews-1": "positive", "reviews-3": None})
    assert {r.id: r.teacher_label for r in train_rows} == {r.id: expected[r.id] for r in train_rows}

    for method in ("step_by_step", "standard"):
        assert (
            main(["train", "sentiment-run.yaml", "--train.method", method, "--name", f"sentiment/{method}"])
            == 0
        )
        out = capsys.readouterr().out.strip().splitlines()
        assert (
            out[0]
            == "train: reading the run's annotations in runs/sentiment/annotations (train, valid, test)"
        )
        run = Path("runs/sentiment") / method
        metrics = json.loads((run / "metrics.json").read_text())
        assert out[-1] == (
            f"train: best validation accuracy {100 * metrics['splits']['valid']['accuracy']:.2f}% (step 2), "
            f"test accuracy {100 * metrics['splits']['test']['accuracy']:.2f}% -> {run}"
        )
        assert (metrics["splits"]["valid"]["n"], metrics["splits"]["test"]["n"]) == (2, 4)
        assert metrics["task_title"] == "sentiment"
        assert metrics["label_source"] == ("gold" if method == "standard" else "teacher")
        # The teacher's labels reached the step_by_step student: its test rows carry them.
        preds = [r for _, r in iter_jsonl(run / "predictions" / "test.jsonl")]
        assert [p["teacher_label"] for p in preds] == ["positive", "negative", "positive", "negative"]
    sbs = json.loads(Path("runs/sentiment/step_by_step/metrics.json").read_text())
    std = json.loads(Path("runs/sentiment/standard/metrics.json").read_text())
    # 8 train rows, all with gold; one without a parsed teacher label (no teacher label to learn).
    unparsed = sum(r.teacher_label is None for r in train_rows)
    assert std["train"]["examples"] == 8 and unparsed == 1
    assert [n for why, n in sbs["train"]["skipped"].items() if "no parsed teacher label" in why] == [1]

    run = Path("runs/sentiment/step_by_step")
    trained = (run / "metrics.json").read_bytes()
    assert main(["evaluate", str(run)]) == 0
    line = last_line(capsys)
    assert line.startswith("evaluate: valid ") and line.endswith(
        f"-> {run / 'evaluation'} (metrics.json, predictions/)"
    )
    assert (run / "metrics.json").read_bytes() == trained  # the training's metrics are left alone

    Path("new.csv").write_text("text\nWhat a great film.\nNot worth it.\n")
    assert main(["predict", str(run), "--input", "new.csv", "--rationale"]) == 0
    rows = [r for _, r in iter_jsonl(run / "predictions-new.jsonl")]
    assert [r["input"] for r in rows] == [
        "Review: What a great film.\nIs this review positive or negative?",
        "Review: Not worth it.\nIs this review positive or negative?",
    ]
    labelled = sum(r["pred"] is not None for r in rows)
    explained = sum(bool(r["student_rationale"]) for r in rows)
    assert last_line(capsys) == (
        f"predict: 2 inputs, {labelled} labelled, {explained} with a rationale -> {run / 'predictions-new.jsonl'}"
    )

    assert main(["report", "runs/sentiment"]) == 0
    assert last_line(capsys) == "report: runs/sentiment/report/report.html"
    md = Path("runs/sentiment/report/report.md").read_text()
    assert md.splitlines()[0] == "# stepdistill report: sentiment"
    assert "generic" not in md
    # Two training folders given separately share one annotation folder: its rows appear once.
    assert main(["report", "runs/sentiment/standard", "runs/sentiment/step_by_step", "--out", "cmp"]) == 0
    both = Path("cmp/report.md").read_text()
    assert both.count("| train |") == md.count("| train |") == 2  # quality and cost tables, once each


def test_label_source_follows_the_method():
    from stepdistill.training.config import TrainConfig
    from stepdistill.training.formatting import label_source as source_of

    def label_source(tc: TrainConfig) -> str:  # metrics.json's label_source for this training config
        return source_of(tc.method, tc.label_source)

    assert [label_source(TrainConfig(method=m)) for m in ("standard", "distill", "step_by_step")] == [
        "gold",
        "teacher",
        "teacher",
    ]
    assert label_source(TrainConfig(method="distill", label_source="gold")) == "teacher"
    assert label_source(TrainConfig(method="standard", label_source="teacher")) == "gold"
    assert label_source(TrainConfig(method="step_by_step", label_source="gold")) == "gold"


def test_a_run_whose_first_answers_do_not_parse_stops_with_exit_2(journey, capsys):
    """The zero-shot case of a real teacher: "The answer is ..." where "So the answer is" is expected.
    The first 10 answers of the run (8 train, then 2 test) are judged; the command stops there."""
    write_jsonl(
        "teacher.jsonl",
        [
            {"id": f"reviews-{i}", "completion": f"The answer is {label}."}
            for i, (_, label) in enumerate(REVIEWS)
        ]
        + [{"id": f"reviews_test-{i}", "completion": "So the answer is positive."} for i in range(4)],
    )
    assert main(["annotate", "sentiment-run.yaml"]) == 2
    # (the tiny data set repeats its inputs across splits: that warning comes first, then the error)
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]
    assert err[0] == (
        "error: the teacher's answers do not parse: 8 of the first 10 completions (split 'test'; 80%, more "
        "than the 20% allowed by annotate.max_parse_failure_share) lack 'So the answer is <answer>' "
        "(one of: positive, negative). Three of them:"
    )
    assert err[1].startswith("  1. 'The answer is ") and err[4].startswith(
        "Fix: give the teacher a few worked"
    )
    assert not Path("runs/sentiment/annotations/summary.json").exists()
    # Going on anyway is one override away; the failures are then counted, never used as labels.
    assert main(["annotate", "sentiment-run.yaml", "--annotate.max_parse_failure_share", "1"]) == 0
    summary = json.loads(Path("runs/sentiment/annotations/summary.json").read_text())["total"]
    assert (summary["parse_failures"], summary["annotated"]) == (8, 4)


def test_train_before_annotate_says_where_it_looked(journey, capsys):
    from stepdistill.config import load_config
    from stepdistill.runfiles import with_annotations

    said: list[str] = []
    cfg = load_config("sentiment-run.yaml")
    assert with_annotations(cfg, say=said.append) is cfg
    assert said == [
        "train: no annotations in runs/sentiment/annotations: reading data.* as written "
        "(`stepdistill annotate` on this config writes them)"
    ]


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_journey() -> dict[str, list]:
    """The README's "Your own task" section: its YAML and JSON blocks and its stepdistill commands."""
    import re
    import shlex

    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Your own task\n") + 1
    section = text[start : text.index("\n## ", start)]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, re.S)
    commands = [
        shlex.split(line)[1:]
        for kind, body in blocks
        if kind == "bash"
        for line in body.splitlines()
        if line.startswith(".venv/bin/stepdistill ")
    ]
    return {
        "yaml": [yaml.safe_load(body) for kind, body in blocks if kind == "yaml"],
        "json": [json.loads(body) for kind, body in blocks if kind == "json"],
        "commands": commands,
    }


def test_the_readme_journey_is_valid_as_written(tmp_path, monkeypatch):
    """The spec, exemplars and config the README shows load as they are; the commands are the six
    that tests/test_journey_llama.py runs."""
    from stepdistill.config import config_from_dict
    from stepdistill.tasks import get_task
    from stepdistill.teachers.prompting import load_prompt_spec

    journey = readme_journey()
    spec, cfg_raw = journey["yaml"]
    monkeypatch.chdir(tmp_path)
    Path("sentiment.yaml").write_text(yaml.safe_dump(spec))
    Path("sentiment-exemplars.json").write_text(json.dumps(journey["json"][0]))
    cfg = config_from_dict(cfg_raw, "README")
    task = get_task(cfg.task)
    prompt = load_prompt_spec(task, cfg.teacher)
    assert prompt.shots[0][1] == "Smiling means the reviewer enjoyed the film. So the answer is positive."
    assert prompt.stop == ("\n",) and task.labels == ("positive", "negative")
    assert [c[:2] for c in journey["commands"]] == [
        ["annotate", "sentiment-run.yaml"],
        ["train", "sentiment-run.yaml"],
        ["train", "sentiment-run.yaml"],
        ["evaluate", "runs/sentiment/step_by_step"],
        ["predict", "runs/sentiment/step_by_step"],
        ["report", "runs/sentiment"],
    ]

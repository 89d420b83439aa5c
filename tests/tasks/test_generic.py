"""A YAML-declared task: spec validation, parsing with a pattern, and the three metrics."""

from __future__ import annotations

import pytest

from stepdistill.data.readers import load_examples
from stepdistill.errors import ConfigError, DataError
from stepdistill.tasks import get_task
from stepdistill.tasks.config import TaskConfig
from stepdistill.tasks.generic import GenericTask

SPEC = """\
input_template: "Review: {text}\\nIs this review positive or negative?"
label_field: sentiment
id_field: rid
labels: [positive, negative]
metric: normalized
"""


@pytest.fixture
def spec_path(tmp_path):
    path = tmp_path / "sentiment.yaml"
    path.write_text(SPEC)
    return path


def test_spec_on_csv_and_jsonl(tmp_path, spec_path):
    task = get_task(TaskConfig(name="generic", spec=str(spec_path)))
    csv_path = tmp_path / "reviews.csv"
    csv_path.write_text('rid,text,sentiment\nr1,"Great, loved it",Positive\nr2,Dull,negative\n')
    jsonl_path = tmp_path / "reviews.jsonl"
    jsonl_path.write_text('{"text": "Great, loved it", "sentiment": "positive"}\n{"text": "Dull"}\n')
    from_csv = load_examples(csv_path, task)
    assert [(a.id, a.fields, a.gold) for a in from_csv] == [
        ("r1", {"text": "Great, loved it"}, "positive"),  # gold mapped onto the closed label set
        ("r2", {"text": "Dull"}, "negative"),
    ]
    from_jsonl = load_examples(jsonl_path, task)
    assert [(a.id, a.gold) for a in from_jsonl] == [("generic-0", "positive"), ("generic-1", None)]
    assert (
        task.format_input(from_csv[0].fields)
        == "Review: Great, loved it\nIs this review positive or negative?"
    )
    p = task.parse_completion(
        "Loved it means happy. So the answer is Positive.\n\nQ: next So the answer is negative"
    )
    assert (p.rationale, p.label) == ("Loved it means happy.", "positive")
    assert (
        task.parse_completion("So the answer is meh.").error
        == "answer 'meh' is not one of positive, negative"
    )
    assert task.is_correct("POSITIVE!", "positive") and not task.is_correct("negative", "positive")


def test_bad_gold_names_file_line_field(tmp_path, spec_path):
    task = get_task(TaskConfig(name="generic", spec=str(spec_path)))
    path = tmp_path / "bad.csv"
    path.write_text("rid,text,sentiment\nr1,ok,positive\nr2,hm,so-so\n")
    with pytest.raises(DataError) as err:
        load_examples(path, task)
    assert (err.value.line, err.value.field) == (3, "sentiment")
    assert str(err.value).startswith(f"{path}:3: field 'sentiment': 'so-so' is not one of")


def test_inline_keys_win_over_spec(spec_path):
    task = get_task(TaskConfig(name="generic", spec=str(spec_path), metric="exact"))
    assert task.metric == "exact" and task.labels == ("positive", "negative")


def test_pattern_and_numeric_metric():
    task = GenericTask(
        input_template="{q}", label_field="a", answer_pattern=r"ANSWER=(?P<label>\S+)", metric="numeric"
    )
    p = task.parse_completion("think think ANSWER=1,250 done")
    assert (p.rationale, p.label) == ("think think", "1,250")
    assert task.is_correct("1,250", "1250") and task.is_correct("$12", "(6 * 2)")
    assert not task.is_correct("12 apples", "12") and not task.is_correct("1/0", "1/0")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"label_field": "a"}, "task.input_template"),
        ({"input_template": "{q}"}, "task.label_field"),
        ({"input_template": "no fields", "label_field": "a"}, "task.input_template"),
        ({"input_template": "{q.__class__}", "label_field": "a"}, "task.input_template"),
        ({"input_template": "{q!r}", "label_field": "a"}, "task.input_template"),
        ({"input_template": "{q", "label_field": "a"}, "task.input_template"),
        ({"input_template": "{q}", "label_field": "a", "answer_pattern": "(unclosed"}, "task.answer_pattern"),
        ({"input_template": "{q}", "label_field": "a", "answer_pattern": "no group"}, "task.answer_pattern"),
        ({"input_template": "{q}", "label_field": "a", "labels": []}, "task.labels"),
        ({"input_template": "{q}", "label_field": "a", "metric": "bleu"}, "task.metric"),
    ],
)
def test_invalid_specs_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        GenericTask(**kwargs)


def test_spec_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("input_template: '{q}'\nlabel_feld: a\n")
    with pytest.raises(ConfigError, match="unknown key.*label_feld"):
        get_task(TaskConfig(name="generic", spec=str(bad)))
    bad.write_text("input_template: '{q}'\nlabel_field: a\nmetric: bleu\n")
    with pytest.raises(ConfigError, match="metric"):
        get_task(TaskConfig(name="generic", spec=str(bad)))
    with pytest.raises(ConfigError, match="does not exist"):
        get_task(TaskConfig(name="generic", spec=str(tmp_path / "missing.yaml")))

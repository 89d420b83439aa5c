"""Few-shot prompts: shipped exemplars parse with each task's own parser; both prompt forms; user files."""

from __future__ import annotations

import json

import pytest

from stepdistill.errors import ConfigError, DataError
from stepdistill.tasks import get_task
from stepdistill.tasks.config import TaskConfig
from stepdistill.teachers.config import TeacherConfig
from stepdistill.teachers.prompting import build_prompt, exemplar_path, load_prompt_spec, read_exemplar_file

TCFG = TeacherConfig(backend="openai_http", model="m")


@pytest.mark.parametrize("name", ["cqa", "svamp", "esnli", "anli", "arith"])
def test_every_shipped_exemplar_parses_to_its_own_answer(name):
    task = get_task(TaskConfig(name=name))
    obj = read_exemplar_file(exemplar_path(name))
    spec = load_prompt_spec(task, TCFG)
    assert 4 <= len(spec.shots) <= 8 and spec.stop[0] == "\nQ:"
    for (_, completion), ex in zip(spec.shots, obj["exemplars"]):
        parsed = task.parse_completion(completion)
        assert parsed.ok and parsed.rationale == ex["rationale"], completion
        # The parsed label is the exemplar's answer (CQA: the choice text; NLI: the bare label).
        assert parsed.label in ex["answer"] and task.answer_phrase.strip() in completion
        if task.labels:
            assert parsed.label in task.labels


def test_plain_and_chat_forms():
    task = get_task(TaskConfig(name="cqa"))
    spec = load_prompt_spec(task, TCFG)
    fields = {"question": "Where do fish live?", "choices": ["tree", "water", "sky", "desk", "car"]}
    prompt = build_prompt(spec, task, fields)
    first_q, first_a = spec.shots[0]
    assert prompt.text.startswith(f"Q: {first_q}\nA: {first_a}\n\nQ: ")
    assert prompt.text.endswith(
        "Q: Where do fish live?\nAnswer Choices:\n(a) tree\n(b) water\n(c) sky\n(d) desk\n(e) car\nA:"
    )
    assert first_a.endswith("So the answer is (b) mailbox.")
    roles = [m["role"] for m in prompt.messages]
    assert roles == ["system"] + ["user", "assistant"] * len(spec.shots) + ["user"]
    assert prompt.messages[-1]["content"] == task.format_input(fields)


def test_user_exemplars_and_template_for_a_generic_task(tmp_path):
    task = get_task(
        TaskConfig(
            name="generic", input_template="Review: {text}", label_field="label", labels=["pos", "neg"]
        )
    )
    # Without exemplars a generic task is prompted zero-shot, told the answer phrase and labels.
    zero = load_prompt_spec(task, TCFG)
    assert zero.shots == () and task.answer_phrase in zero.system and "pos, neg" in zero.system
    path = tmp_path / "shots.json"
    path.write_text(
        json.dumps({"exemplars": [{"input": "Review: great", "completion": "Happy. So the answer is pos."}]})
    )
    cfg = TeacherConfig(
        backend="openai_http",
        model="m",
        exemplars=str(path),
        prompt_template="{exemplars}Classify ({answer_phrase} ...): {input} [{text}]\nA:",
        system_prompt="Be brief.",
        stop=["\n\n"],
    )
    spec = load_prompt_spec(task, cfg)
    prompt = build_prompt(spec, task, {"text": "awful"})
    assert prompt.text == (
        "Q: Review: great\nA: Happy. So the answer is pos.\n\nClassify (So the answer is ...): Review: awful [awful]\nA:"
    )
    assert prompt.messages == (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": prompt.text},
    )
    assert spec.stop == ("\n\n",)


def test_bad_exemplar_files_name_file_and_field(tmp_path):
    task = get_task(TaskConfig(name="arith"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"exemplars": [{"fields": {"question": "q"}, "rationale": "r"}]}))
    with pytest.raises(DataError, match=r"bad.json: field 'exemplars\[0\].answer': missing"):
        load_prompt_spec(task, TeacherConfig(backend="openai_http", model="m", exemplars=str(bad)))
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json:1: not valid JSON"):
        load_prompt_spec(task, TeacherConfig(backend="openai_http", model="m", exemplars=str(bad)))
    with pytest.raises(ConfigError, match="teacher.exemplars: file .*missing.json does not exist"):
        load_prompt_spec(
            task, TeacherConfig(backend="openai_http", model="m", exemplars=str(tmp_path / "missing.json"))
        )

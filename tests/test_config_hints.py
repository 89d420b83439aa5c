"""Config errors name the nearest valid key or value ("did you mean `max_steps`?")."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_config_errors_suggest_the_nearest_key_or_value(tmp_path):
    from stepdistill.config import load_config
    from stepdistill.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text(
        "task: {name: svamp}\ndata: {train: t.jsonl}\ntrain: {max_step: 3, method: stepbystep}\nstudnt: {}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).splitlines()[1:] == [
        "  train.method: Input should be 'standard', 'distill', 'step_by_step', 'single_task', "
        "'answer_first' or 'rationale_input' (did you mean `step_by_step`?)",
        "  train.max_step: unknown key (did you mean `max_steps`?)",
        "  studnt: unknown key (did you mean `student`?)",
    ]
    with pytest.raises(ConfigError, match=r"kd\.temperatur: unknown key \(did you mean `temperature`\?\)"):
        load_config(_write(tmp_path, "kd: {temperatur: 2}\n"))
    spec = tmp_path / "spec.yaml"
    spec.write_text("input_template: '{x}'\nlabel_feld: y\n")
    from stepdistill.tasks import get_task
    from stepdistill.tasks.config import TaskConfig

    with pytest.raises(ConfigError, match=r"unknown key label_feld \(did you mean `label_field`\?\)"):
        get_task(TaskConfig(name="generic", spec=str(spec)))
    spec.write_text("input_template: '{x}'\nlabel_field: y\nmetric: normalised\n")
    with pytest.raises(ConfigError) as err:
        get_task(TaskConfig(name="generic", spec=str(spec)))
    assert str(err.value) == (
        f"task.spec: {spec}: metric: Input should be 'exact', 'normalized' or 'numeric' (did you mean `normalized`?)"
    )


def _write(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "e.yaml"
    path.write_text("task: {name: svamp}\ndata: {train: t.jsonl}\n" + extra)
    return path


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"train": {"max_tokens_per_pass": 64}}, "train.max_tokens_per_pass: not available with a kd: section"),
        ({"train": {"rationales": "agreeing"}},
         "train.rationales / train.rationale_max_tokens: not available with a kd: section"),
        ({"train": {"rationale_max_tokens": 50}},
         "train.rationales / train.rationale_max_tokens: not available with a kd: section"),
        ({"train": {"method": "distill"}, "kd": {"tasks": ["rationale"]}},
         "kd.tasks ['rationale']: train.method 'distill' has no rationale rows; use kd.tasks: [label]"),
        ({"train": {"method": "single_task"}, "kd": {"label_distribution": True}},
         "kd.label_distribution: train.method 'single_task' has no label-only target; use standard, distill, "
         "step_by_step or rationale_input"),
        ({"task": {"name": "svamp"}, "kd": {"label_distribution": True}},
         "kd.label_distribution: task 'svamp' has no closed label set (task.labels)"),
        ({"kd": {"teacher_model": None}},
         "kd.teacher_model: required with kd.source 'whitebox' (or set kd.source: topk_file)"),
    ],
)  # fmt: skip
def test_run_plan_refuses_a_bad_combination_of_sections(tmp_path, capsys, changes, message):
    """Checks across sections run when the config loads: `run --plan` (which loads no model) stops
    with the field names and what to do."""
    import yaml

    from stepdistill.cli import main

    raw = {
        "task": {"name": "generic", "input_template": "{text}", "label_field": "label", "labels": ["a", "b"]},
        "data": {"train": str(tmp_path / "train.jsonl")},
        "student": {"model": "some/student"},
        "train": {"method": "step_by_step"},
        "kd": {"teacher_model": "some/teacher"},
    }
    for section, values in changes.items():
        raw[section] = {**raw[section], **values} if section != "task" else values
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path), "--plan"]) == 2
    err = capsys.readouterr().err
    assert message in err and f"invalid config {path}" in err

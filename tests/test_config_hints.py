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

"""Scoring, and `stepdistill train / evaluate / predict` through the CLI on a tiny run."""

from __future__ import annotations

import json

import pytest
import yaml

from stepdistill.cli import main
from stepdistill.data.io import iter_jsonl, write_jsonl
from stepdistill.evaluate import score
from stepdistill.tasks import get_task
from stepdistill.tasks.config import TaskConfig


def _row(correct, teacher_correct):
    return {"id": "x", "correct": correct, "teacher_correct": teacher_correct}


def test_score_counts_student_and_teacher():
    task = get_task(TaskConfig(name="arith"))
    rows = [_row(True, True), _row(False, True), _row(True, False), _row(None, None), _row(False, None)]
    assert score(task, rows) == {
        "accuracy": 2 / 4,
        "correct": 2,
        "n": 4,
        "teacher_accuracy": 2 / 3,
        "teacher_correct": 2,
        "teacher_n": 3,
    }
    assert score(task, [])["accuracy"] is None


QUESTIONS = [
    ("What is 2 plus 3?", "2 + 3"),
    ("What is 7 minus 4?", "7 - 4"),
    ("What is 6 times 2?", "6 * 2"),
    ("What is 9 divided by 3?", "9 / 3"),
]


@pytest.fixture
def arith_config(tmp_path, tiny_causal_dir):
    rows = [
        {
            "id": f"q{i}",
            "fields": {"question": q},
            "gold": a,
            "teacher_label": a if i else "1 + 1",
            "teacher_rationale": f"We compute {a}.",
            "teacher_raw": f"We compute {a}. The answer is {a}.",
        }
        for i, (q, a) in enumerate(QUESTIONS)
    ]
    write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = {
        "name": "cli-run",
        "out_dir": str(tmp_path / "runs"),
        "task": {"name": "arith"},
        "data": {
            "train": str(tmp_path / "train.jsonl"),
            "valid": str(tmp_path / "train.jsonl"),
            "test": str(tmp_path / "train.jsonl"),
        },
        "student": {"model": str(tiny_causal_dir)},
        "train": {"method": "step_by_step", "max_steps": 2, "eval_every": 2, "batch_size": 4, "lr": 1e-3},
        "eval": {"max_new_tokens": 4},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_train_evaluate_predict(tmp_path, arith_config):
    assert main(["train", str(arith_config), "--train.alpha", "0.7"]) == 0
    run = tmp_path / "runs" / "cli-run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["alpha"] == 0.7 and metrics["task"] == "arith" and metrics["train"]["steps"] == 2
    # The teacher got q0 wrong ("1 + 1" for 2 + 3): 3 of 4.
    assert metrics["splits"]["test"]["teacher_correct"] == 3 and metrics["splits"]["test"]["n"] == 4
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["alpha"] == 0.7

    # evaluate writes <run>/evaluation/ and leaves the training's own files as they were.
    before = {p: p.read_bytes() for p in [run / "metrics.json", *sorted((run / "predictions").iterdir())]}
    assert main(["evaluate", str(run), "--split", "valid"]) == 0
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in (run / "evaluation" / "predictions").iterdir()) == ["valid.jsonl"]
    fresh = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert fresh["splits"] == {"valid": metrics["splits"]["valid"]}

    # --overwrite: only the asked split is rewritten, metrics.json keeps the other.
    (run / "predictions" / "valid.jsonl").unlink()
    assert main(["evaluate", str(run), "--split", "valid", "--overwrite"]) == 0
    again = json.loads((run / "metrics.json").read_text())
    assert again["splits"]["valid"] == metrics["splits"]["valid"] and "test" in again["splits"]
    assert len(list(iter_jsonl(run / "predictions" / "valid.jsonl"))) == 4

    write_jsonl(
        tmp_path / "new.jsonl", [{"question": "What is 1 plus 1?"}, {"question": "What is 3 minus 1?"}]
    )
    assert main(["predict", str(run), "--input", str(tmp_path / "new.jsonl"), "--rationale"]) == 0
    out = [r for _, r in iter_jsonl(run / "predictions-new.jsonl")]
    assert [r["input"] for r in out] == ["What is 1 plus 1?", "What is 3 minus 1?"]
    assert all("student_rationale" in r and r["gold"] is None and r["correct"] is None for r in out)


def test_cli_reports_user_errors(tmp_path, arith_config, capsys):
    assert main(["evaluate", str(tmp_path / "no-such-run")]) == 2
    assert "neither a run folder" in capsys.readouterr().err
    assert main(["train", str(arith_config), "--train.method", "magic"]) == 2
    assert "train.method" in capsys.readouterr().err


def test_single_task_generation_budget_covers_the_rationale(tiny_causal_dir):
    """A single_task student writes its rationale before the label: the label budget alone would cut
    the answer off, so generation gets max_target_length more tokens."""
    from stepdistill.evaluate import generation_budget, predict_labels
    from stepdistill.evaluate_config import EvalConfig
    from stepdistill.schema import Annotation
    from stepdistill.tasks import get_task
    from stepdistill.tasks.config import TaskConfig
    from stepdistill.training.config import StudentConfig, TrainConfig
    from stepdistill.training.models import load_student

    eval_cfg = EvalConfig(max_new_tokens=3)
    student = load_student(StudentConfig(model=str(tiny_causal_dir)), seed=0)
    asked: list[int] = []
    original = student.model.generate

    def recording_generate(*args, **kwargs):
        asked.append(kwargs["max_new_tokens"])
        return original(*args, **kwargs)

    student.model.generate = recording_generate
    task = get_task(TaskConfig(name="arith"))
    rows = [Annotation(id="a", fields={"question": "Tom has 2 apples and gets 3. How many?"}, gold="2 + 3")]
    for method, expected in [("single_task", 10), ("standard", 3)]:
        train_cfg = TrainConfig(method=method, max_target_length=7)
        assert generation_budget(train_cfg, eval_cfg, rationale_first=method == "single_task") == expected
        asked.clear()
        predict_labels(student, task, rows, train_cfg, eval_cfg)
        assert asked == [expected]

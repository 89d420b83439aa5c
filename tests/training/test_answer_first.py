"""answer_first: one sequence, label then rationale; at test time the label alone is generated."""

from __future__ import annotations

import torch

from stepdistill.evaluate_config import EvalConfig
from stepdistill.schema import Annotation
from stepdistill.training.config import StudentConfig, TrainConfig
from stepdistill.training.formatting import Pair, build_pairs, eval_source, split_answer_first

ANN = Annotation(
    id="a",
    fields={"question": "Tom has 2 apples and gets 3. How many?"},
    gold="2 + 3",
    teacher_label="2 + 3",
    teacher_rationale="He adds the 3 new apples to the 2 he has. ",
)


def test_answer_first_target_is_label_then_rationale():
    from stepdistill.tasks import get_task
    from stepdistill.tasks.config import TaskConfig

    task = get_task(TaskConfig(name="arith"))
    cfg = TrainConfig(method="answer_first", label_source="gold")
    out = build_pairs(task, [ANN, Annotation(id="b", fields={"question": "x"}, gold="1")], cfg)
    text = task.format_input(ANN.fields)
    assert out.examples == [[Pair(text, "2 + 3\nHe adds the 3 new apples to the 2 he has.", 0)]]
    assert dict(out.skipped) == {"no teacher rationale": 1}
    assert eval_source(task, ANN, cfg) == text  # no prefix: the same source as in training


def test_split_answer_first():
    assert split_answer_first("5\nbecause 2 + 3") == ("5", "because 2 + 3")
    assert split_answer_first(" 5 ") == ("5", None)
    assert split_answer_first("") == (None, None)


def test_label_only_generation_stops_after_the_label(tiny_causal_dir, memorise):
    from stepdistill.evaluate import predict_labels
    from stepdistill.tasks import get_task
    from stepdistill.tasks.config import TaskConfig
    from stepdistill.training.models import load_student

    torch.manual_seed(0)
    task = get_task(TaskConfig(name="arith"))
    train_cfg = TrainConfig(method="answer_first", label_source="gold", max_target_length=32)
    student = load_student(StudentConfig(model=str(tiny_causal_dir)), seed=0)
    source = eval_source(task, ANN, train_cfg)
    memorise(student, source, build_pairs(task, [ANN], train_cfg).examples[0][0].target)

    calls = {"n": 0}
    forward = student.model.forward

    def counting_forward(*args, **kwargs):
        calls["n"] += 1
        return forward(*args, **kwargs)

    student.model.forward = counting_forward
    eval_cfg = EvalConfig(max_new_tokens=16)
    (row,) = predict_labels(student, task, [ANN], train_cfg, eval_cfg)
    label_calls = calls["n"]
    assert row["pred"] == "2 + 3" and row["correct"] is True
    calls["n"] = 0
    (with_why,) = predict_labels(student, task, [ANN], train_cfg, eval_cfg, rationale=True)
    assert with_why["pred"] == "2 + 3"
    assert with_why["student_rationale"] == "He adds the 3 new apples to the 2 he has."
    # the label ("2 + 3" and its newline) takes a handful of tokens; the rationale takes many more
    assert label_calls < 8 < calls["n"]

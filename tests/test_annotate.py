"""The annotator's bookkeeping: voting, parse failures, gold filter, cost, dedup, summary, CLI entry.

A scripted in-process teacher stands in for the LLM here (the HTTP backends are proven against real
servers in tests/teachers); the precomputed backend is exercised on the paper's PaLM outputs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence

import pytest
import yaml

from stepdistill.annotate import IncompleteAnnotation, annotate, annotate_from_config, combine, cost_usd
from stepdistill.config import load_config
from stepdistill.data.io import read_annotations
from stepdistill.errors import ConfigError
from stepdistill.schema import Annotation
from stepdistill.tasks.arith import ArithTask
from stepdistill.tasks.cqa import CQATask
from stepdistill.teachers.base import Completion, Job, Sampling, Teacher
from stepdistill.teachers.config import AnnotateConfig, TeacherConfig

TCFG = TeacherConfig(
    backend="openai_http", model="scripted", price_input_per_mtok=1.0, price_output_per_mtok=2.0
)
QUIET = AnnotateConfig(progress=False)


class ScriptedTeacher(Teacher):
    """Answers (question, sample) from a table; records every job it is sent."""

    def __init__(self, answers: dict[tuple[str, int], str | None]):
        self.answers, self.sent = answers, []
        self.identity = "openai_http:scripted"

    async def stream(self, jobs: Sequence[Job], sampling: Sampling) -> AsyncIterator[tuple[Job, Completion]]:
        for job in jobs:
            self.sent.append((job.prompt.messages[-1]["content"], job.sample, sampling.temperature))
            text = self.answers[(job.prompt.messages[-1]["content"], job.sample)]
            yield (
                job,
                Completion(text, 100, 10) if text is not None else Completion.failed("http_503", retries=6),
            )


def ann(i: int, question: str, gold: str | None) -> Annotation:
    return Annotation(id=f"a{i}", fields={"question": question}, gold=gold)


def test_self_consistency_votes_and_keeps_all_samples(tmp_path):
    rows = [ann(0, "What is 1 + 1?", "1 + 1"), ann(1, "What is 2 * 3?", "6")]
    t = ScriptedTeacher(
        {
            ("What is 1 + 1?", 0): "One plus one. The answer is ( 1 + 1 ).",
            ("What is 1 + 1?", 1): "Hmm. The answer is ( 3 ).",
            ("What is 1 + 1?", 2): "Add them. The answer is ( 1 + 1 ).",
            ("What is 2 * 3?", 0): "I do not know.",
            ("What is 2 * 3?", 1): "Times. The answer is ( 5 ).",
            ("What is 2 * 3?", 2): "Six. The answer is ( 2 * 3 ).",
        }
    )
    acfg = AnnotateConfig(samples=3, sample_temperature=0.8, progress=False)
    out, summary = annotate(
        ArithTask(), rows, TCFG, acfg, tmp_path / "c.sqlite", tmp_path / "o.jsonl", teacher=t
    )
    assert {temp for _, _, temp in t.sent} == {0.8} and len(t.sent) == 6
    a, b = out
    assert (a.teacher_label, a.teacher_rationale, a.extra["agreement"]) == (
        "( 1 + 1 )",
        "One plus one.",
        2 / 3,
    )
    assert [s["label"] for s in a.teacher_samples] == ["( 1 + 1 )", "( 3 )", "( 1 + 1 )"]
    # A tie (one vote each for 5 and 2*3, one unparsed) goes to the label seen first.
    assert b.teacher_label == "( 5 )" and b.teacher_samples[0]["parse_error"] is not None
    assert (summary["teacher_correct"], summary["teacher_n"], summary["requests"]) == (1, 2, 6)
    assert summary["prompt_tokens"] == 600 and summary["completion_tokens"] == 60
    assert summary["cost_usd"] == pytest.approx((600 * 1.0 + 60 * 2.0) / 1e6)
    assert [r.teacher_label for r in read_annotations(tmp_path / "o.jsonl")] == ["( 1 + 1 )", "( 5 )"]
    # The vote of the first j samples against gold; any_correct: some sample among them is right.
    assert summary["vote_by_k"] == {
        "1": {"accuracy": 0.5, "any_correct": 0.5, "n": 2},
        "2": {"accuracy": 0.5, "any_correct": 0.5, "n": 2},  # a's tie (1+1 vs 3) goes to 1+1
        "3": {"accuracy": 0.5, "any_correct": 1.0, "n": 2},  # b's 2*3 is right, but 5 wins the tie
    }


def test_unparsed_answers_are_kept_and_counted_never_labels(tmp_path):
    rows = [ann(0, "What is 4 - 1?", "3"), ann(1, "What is 5 + 5?", "10")]
    t = ScriptedTeacher(
        {("What is 4 - 1?", 0): "Four minus one is three.", ("What is 5 + 5?", 0): "The answer is ( 5 + 5 )."}
    )
    acfg = AnnotateConfig(progress=False, max_parse_failure_share=1.0)  # 1 of 2 fails: do not stop
    out, summary = annotate(ArithTask(), rows, TCFG, acfg, tmp_path / "c", tmp_path / "o.jsonl", teacher=t)
    assert out[0].teacher_raw == "Four minus one is three." and out[0].teacher_label is None
    assert out[0].parse_error and not out[0].annotated
    assert (
        summary["parse_failures"],
        summary["annotated"],
        summary["teacher_correct"],
        summary["teacher_n"],
    ) == (1, 1, 1, 2)


def test_gold_filter_drops_disagreeing_rationales_but_keeps_rows(tmp_path):
    rows = [ann(0, "What is 2 + 2?", "4"), ann(1, "What is 3 + 3?", "6")]
    answers = {
        ("What is 2 + 2?", 0): "Two and two. The answer is ( 5 ).",
        ("What is 3 + 3?", 0): "Three and three. The answer is ( 3 + 3 ).",
    }
    acfg = AnnotateConfig(gold_filter=True, progress=False)

    def run(split: str):
        return annotate(
            ArithTask(),
            rows,
            TCFG,
            acfg,
            tmp_path / "c",
            tmp_path / f"{split}.jsonl",
            teacher=ScriptedTeacher(answers),
            split=split,
        )

    out, summary = run("train")
    assert out[0].teacher_label is None and out[0].teacher_rationale is None
    assert out[0].teacher_raw.endswith("( 5 ).") and "does not match gold" in out[0].extra["filtered"]
    assert out[1].teacher_label == "( 3 + 3 )"
    # Accuracy is the teacher's, measured before filtering.
    assert (summary["filtered"], summary["teacher_correct"], summary["teacher_n"]) == (1, 1, 2)
    # The test split is never filtered (gold_filter_splits defaults to train and valid).
    out, summary = run("test")
    assert summary["filtered"] == 0 and out[0].teacher_label == "( 5 )"


def test_identical_inputs_are_asked_once_and_failures_counted(tmp_path):
    rows = [ann(0, "What is 1 + 2?", "3"), ann(1, "What is 1 + 2?", "3"), ann(2, "What is 9 - 9?", "0")]
    t = ScriptedTeacher({("What is 1 + 2?", 0): "Sum. The answer is ( 1 + 2 ).", ("What is 9 - 9?", 0): None})
    out, summary = annotate(ArithTask(), rows, TCFG, QUIET, tmp_path / "c", tmp_path / "o", teacher=t)
    assert len(t.sent) == 2
    assert [a.teacher_label for a in out] == ["( 1 + 2 )", "( 1 + 2 )", None]
    assert out[2].extra == {"teacher_error": "http_503"} and out[2].teacher_raw is None
    assert (summary["requests"], summary["retries"], summary["failures"], summary["unanswered"]) == (
        2,
        6,
        {"http_503": 1},
        1,
    )


def test_cost_is_none_without_prices_and_exact_with_them():
    assert cost_usd(TeacherConfig(backend="openai_http", model="m"), 10, 10) is None
    assert cost_usd(TCFG, 2_000_000, 500_000) == 3.0


def test_combine_records_logprobs_of_the_single_sample():
    lp = [{"token": "x", "logprob": -1.0, "top": [["x", -1.0]]}]
    out = combine(ArithTask(), ann(0, "q", "1"), [Completion("The answer is ( 1 ).", logprobs=lp)], "t")
    assert out.teacher_logprobs == lp and out.teacher_model == "t" and out.teacher_label == "( 1 )"


def test_precomputed_palm_outputs_reproduce_paper_teacher_accuracy(shared_data, tmp_path):
    """The paper's PaLM completions through the precomputed backend: 943/1221 on CQA test."""
    task = CQATask()
    records = [
        json.loads(line)
        for line in (shared_data / "cqa" / "cqa_test.json").read_text().splitlines()
        if line.strip()
    ]
    completions = []
    for i in range(2):
        completions += json.loads((shared_data / "cqa" / "llm" / f"test_CoT_{i}.json").read_text())
    rows = [Annotation.from_example(task.example_from_record(r, i)) for i, r in enumerate(records)]
    path = tmp_path / "palm.jsonl"
    path.write_text(
        "".join(json.dumps({"id": a.id, "completion": c}) + "\n" for a, c in zip(rows, completions))
    )
    tcfg = TeacherConfig(backend="precomputed", model="palm-540b", path=str(path))
    out, summary = annotate(
        task, rows, tcfg, QUIET, tmp_path / "c.sqlite", tmp_path / "test.jsonl", split="test"
    )
    assert (summary["teacher_correct"], summary["teacher_n"], summary["examples"]) == (943, 1221, 1221)
    assert summary["teacher_model"] == "precomputed:palm-540b" and out[0].teacher_raw == completions[0]
    assert summary["cost_usd"] is None and summary["failures"] == {}


def test_annotate_from_config_writes_splits_summary_and_resumes(tmp_path, capsys):
    data = tmp_path / "arith.jsonl"
    qs = [(f"What is {i} + 3?", f"{i} + 3") for i in range(10)]
    data.write_text(
        "".join(json.dumps({"id": f"r{i}", "question": q, "answer": g}) + "\n" for i, (q, g) in enumerate(qs))
    )
    pre = tmp_path / "answers.jsonl"
    lines = [{"id": f"r{i}", "completion": f"Add three. The answer is ( {i} + 3 )."} for i in range(9)]
    pre.write_text("".join(json.dumps(x) + "\n" for x in lines))  # r9 has no answer
    raw = {
        "name": "ann",
        "out_dir": str(tmp_path / "runs"),
        "task": {"name": "arith"},
        "data": {"train": str(data), "valid_fraction": 0.2},
        "teacher": {"backend": "precomputed", "path": str(pre)},
        "annotate": {"splits": ["train", "valid", "test"], "progress": False},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "c.yaml")
    # one example without an answer: everything is written, then the command fails saying so
    with pytest.raises(IncompleteAnnotation, match="1 of 10 examples have no teacher answer"):
        annotate_from_config(cfg)
    out_dir = tmp_path / "runs" / "ann" / "annotations"
    summary = json.loads((out_dir / "summary.json").read_text())
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "cache.sqlite",
        "summary.json",
        "train.jsonl",
        "valid.jsonl",
    ]
    total = summary["total"]
    assert (total["examples"], total["annotated"], total["failures"], total["teacher_correct"]) == (
        10,
        9,
        {"missing_precomputed": 1},
        9,
    )
    assert "failed requests (re-run to retry them): missing_precomputed=1" in capsys.readouterr().out
    ids = sorted(a.id for s in ("train", "valid") for a in read_annotations(out_dir / f"{s}.jsonl"))
    assert ids == sorted(f"r{i}" for i in range(10))
    cfg.annotate.allow_incomplete = True
    again = annotate_from_config(cfg)["total"]
    assert (again["cache_hits"], again["requests"]) == (9, 1)


def test_config_errors_name_the_field(tmp_path):
    rows = [ann(0, "q", "1")]
    with pytest.raises(ConfigError, match="annotate.samples"):
        annotate(
            ArithTask(),
            rows,
            TeacherConfig(backend="precomputed", path="x"),
            AnnotateConfig(samples=3),
            tmp_path / "c",
            tmp_path / "o",
        )
    with pytest.raises(ConfigError, match=r"teacher.prompt_template: unknown placeholder\(s\) \{nope\}"):
        annotate(
            ArithTask(),
            rows,
            TeacherConfig(backend="openai_http", model="m", prompt_template="{nope}"),
            QUIET,
            tmp_path / "c",
            tmp_path / "o",
        )

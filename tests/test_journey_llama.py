"""The README's "Your own task" journey, played against a real llama.cpp server serving the
embedded SmolLM2 GGUF: write the data, the task spec, exemplars and one config; annotate, train two
methods, evaluate, predict with rationales, report. No file is edited between the commands, which
are read from the README's "Your own task" section, and every command's closing line is checked.

llama.cpp generates ~10 tokens/s on two busy cores, so the task is tiny (4 train reviews, 1 test
review) and answers stop at the end of their line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import yaml

from stepdistill.cli import main
from stepdistill.data.io import iter_jsonl, read_annotations

sys.path.insert(0, str(Path(__file__).parent))
from test_journey import readme_journey  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "teachers"))
from test_llama_server import HAVE_LLAMA, free_port, start_llama  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not HAVE_LLAMA,
        reason="llama-cpp-python[server] is not installed: `make test` or `make setup-server` builds it",
    ),
]

REVIEWS = """\
review_id,text,sentiment
r1,Loved every minute of it.,positive
r2,A waste of two hours.,negative
r3,Brilliant acting and a great story.,positive
r4,"Boring, slow and far too long.",negative
"""
SPEC = """\
input_template: "Review: {text}\\nIs this review positive or negative?"
label_field: sentiment
id_field: review_id
labels: [positive, negative]
metric: normalized
"""
EXEMPLARS = {  # answers end in "." as a sentence does: without it SmolLM2 drops the phrase more often
    "exemplars": [
        {
            "fields": {"text": "I smiled all the way through."},
            "rationale": "Smiling means the reviewer enjoyed the film.",
            "answer": "positive.",
        },
        {
            "fields": {"text": "I want my money back."},
            "rationale": "Wanting the money back means the reviewer did not like it.",
            "answer": "negative.",
        },
        {
            "fields": {"text": "A lovely, moving story."},
            "rationale": "Lovely and moving are words of praise.",
            "answer": "positive.",
        },
    ],
    "stop": ["\n"],
}


def write_journey(folder: Path, port: int, student: Path) -> None:
    """What the README asks a user to write: data, the task spec, exemplars and one config."""
    (folder / "reviews.csv").write_text(REVIEWS)
    (folder / "reviews_test.csv").write_text(
        "review_id,text,sentiment\nt1,The worst film this year.,negative\n"
    )
    (folder / "new.csv").write_text("text\nCharming and funny.\n")
    (folder / "sentiment.yaml").write_text(SPEC)
    (folder / "sentiment-exemplars.json").write_text(json.dumps(EXEMPLARS))
    cfg = {
        "name": "sentiment",
        "task": {"name": "generic", "spec": "sentiment.yaml"},
        "data": {"train": "reviews.csv", "test": "reviews_test.csv", "valid_fraction": 0.25},
        "teacher": {
            "backend": "openai_http",
            "base_url": f"http://127.0.0.1:{port}/v1",
            "model": "smollm2",
            "endpoint": "completions",
            "exemplars": "sentiment-exemplars.json",
            "max_tokens": 24,
            "concurrency": 1,
        },
        "annotate": {"splits": ["train", "test"], "progress": False},
        "sweep": {"teacher_timing_examples": 1},
        "student": {"model": str(student)},
        "train": {"max_steps": 2, "eval_every": 2, "batch_size": 4, "lr": 1e-3, "max_target_length": 24},
        "eval": {"max_new_tokens": 3},
    }
    (folder / "sentiment-run.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_the_readme_journey_against_a_real_llama_server(tmp_path, tiny_causal_dir, monkeypatch, capsys):
    annotate, train_sbs, train_std, evaluate, predict, report = readme_journey()["commands"]
    monkeypatch.chdir(tmp_path)
    port = free_port()
    write_journey(tmp_path, port, tiny_causal_dir)

    # The server is not started yet: annotate says so within seconds and writes nothing.
    start = time.monotonic()
    assert main(annotate) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: no server at http://127.0.0.1:{port}/v1 (connection refused) — is it running?"
    )
    assert time.monotonic() - start < 10 and not Path("runs").exists()

    server = start_llama(port)
    try:
        # A base_url without /v1 is named with its fix (llama.cpp serves under /v1 only).
        start = time.monotonic()
        assert main([*annotate, "--teacher.base_url", f"http://127.0.0.1:{port}"]) == 2
        assert capsys.readouterr().err.strip() == (
            f"error: 404 at http://127.0.0.1:{port}/completions: OpenAI-compatible servers usually serve "
            f"under /v1 (e.g. teacher.base_url: http://127.0.0.1:{port}/v1)"
        )
        assert time.monotonic() - start < 10 and not Path("runs").exists()

        assert main(annotate) == 0
    finally:
        server.kill()
        server.wait()
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(Path("runs/sentiment/annotations/summary.json").read_text())["total"]
    assert (summary["examples"], summary["unanswered"]) == (4, 0)
    assert out[-1] == (
        f"annotate: 3 train, 1 test, 1 valid (carved from train, not annotated) examples; "
        f"{summary['annotated']} annotated, {summary['parse_failures']} not parsed, 0 unanswered, "
        f"teacher accuracy {100 * summary['teacher_accuracy']:.2f}% -> runs/sentiment/annotations"
    )
    train_rows = read_annotations("runs/sentiment/annotations/train.jsonl")
    assert all(r.teacher_raw and r.teacher_model == "openai_http:smollm2" for r in train_rows)
    timing = json.loads(Path("runs/sentiment/teacher_timing.json").read_text())
    assert (timing["examples"], timing["succeeded"]) == (1, 1) and timing["ms_per_example"] > 0

    for method, args in (("step_by_step", train_sbs), ("standard", train_std)):
        assert args[2:] == ["--train.method", method, "--name", f"sentiment/{method}"]
        assert main(args) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert (
            lines[0]
            == "train: reading the run's annotations in runs/sentiment/annotations (train, valid, test)"
        )
        metrics = json.loads(Path(f"runs/sentiment/{method}/metrics.json").read_text())
        valid, test = metrics["splits"]["valid"], metrics["splits"]["test"]
        assert (valid["n"], test["n"], metrics["task_title"]) == (1, 1, "sentiment")
        assert lines[-1] == (
            f"train: best validation accuracy {100 * valid['accuracy']:.2f}% (step 2), "
            f"test accuracy {100 * test['accuracy']:.2f}% -> runs/sentiment/{method}"
        )

    assert main(evaluate) == 0
    scores = json.loads(Path("runs/sentiment/step_by_step/evaluation/metrics.json").read_text())["splits"]
    assert last_line(capsys) == (
        "evaluate: "
        + ", ".join(
            f"{s} {100 * scores[s]['accuracy']:.2f}% ({scores[s]['correct']}/{scores[s]['n']})"
            for s in ("valid", "test")
        )
        + " -> runs/sentiment/step_by_step/evaluation (metrics.json, predictions/)"
    )

    assert predict == ["predict", "runs/sentiment/step_by_step", "--input", "new.csv", "--rationale"]
    assert main(predict) == 0
    rows = [r for _, r in iter_jsonl("runs/sentiment/step_by_step/predictions-new.jsonl")]
    assert [r["input"] for r in rows] == ["Review: Charming and funny.\nIs this review positive or negative?"]
    labelled, explained = (
        sum(r["pred"] is not None for r in rows),
        sum(bool(r["student_rationale"]) for r in rows),
    )
    assert last_line(capsys) == (
        f"predict: 1 input, {labelled} labelled, {explained} with a rationale "
        "-> runs/sentiment/step_by_step/predictions-new.jsonl"
    )

    assert main(report) == 0
    assert last_line(capsys) == "report: runs/sentiment/report/report.html"
    md = Path("runs/sentiment/report/report.md").read_text()
    assert md.splitlines()[0] == "# stepdistill report: sentiment"
    assert "| teacher | openai_http:smollm2 |" in md  # the teacher's timing row, from `annotate`

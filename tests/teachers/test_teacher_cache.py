"""The SQLite answer cache: keys, durability, and resuming a run that was killed mid-way."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from scripted_server import ok_body

from stepdistill.annotate import annotate
from stepdistill.data.io import read_annotations
from stepdistill.schema import Annotation
from stepdistill.tasks.arith import ArithTask
from stepdistill.teachers.base import Completion, Prompt, Sampling
from stepdistill.teachers.cache import ResponseCache, request_key
from stepdistill.teachers.config import AnnotateConfig, TeacherConfig

PROMPT = Prompt(text="Q: x\nA:", messages=({"role": "user", "content": "x"},))


def cfg(**kw) -> TeacherConfig:
    return TeacherConfig(**{"backend": "openai_http", "model": "m", **kw})


def test_key_ignores_credentials_and_address_but_not_what_changes_answers():
    s = Sampling(max_tokens=8, seed=0)
    base = request_key(cfg(), PROMPT, s, 0, "a")
    assert base == request_key(
        cfg(api_key_env="OTHER", base_url="http://h:1/v1", concurrency=3), PROMPT, s, 0, "a"
    )
    assert base == request_key(cfg(), PROMPT, s, 0, "another-id")  # same prompt, same answer
    assert base != request_key(cfg(model="m2"), PROMPT, s, 0, "a")
    assert base != request_key(cfg(), PROMPT, Sampling(max_tokens=8, seed=0, temperature=0.5), 0, "a")
    assert base != request_key(cfg(), PROMPT, s, 1, "a")
    assert base != request_key(cfg(endpoint="completions"), PROMPT, s, 0, "a")
    assert base == request_key(cfg(dtype="auto"), PROMPT, s, 0, "a")  # the keys caches already hold
    assert base != request_key(cfg(dtype="bfloat16"), PROMPT, s, 0, "a")
    pre = TeacherConfig(backend="precomputed", path="x.jsonl")
    assert request_key(pre, PROMPT, s, 0, "a") != request_key(pre, PROMPT, s, 0, "b")


def test_put_get_roundtrip_wal_and_no_failures(tmp_path):
    path = tmp_path / "c.sqlite"
    with ResponseCache(path) as cache:
        cache.put(
            "k1",
            "t",
            "ex1",
            0,
            Completion("hi", 3, 2, logprobs=[{"token": "hi", "logprob": -0.5, "top": []}]),
        )
        try:
            cache.put("k2", "t", "ex2", 0, Completion.failed("http_500"))
            raise AssertionError("a failure must not be cached")
        except ValueError:
            pass
        got = cache.get_many(["k1", "k2"])
        assert list(got) == ["k1"] and len(cache) == 1
        assert (got["k1"].text, got["k1"].prompt_tokens, got["k1"].completion_tokens, got["k1"].cached) == (
            "hi",
            3,
            2,
            True,
        )
        assert got["k1"].logprobs == [{"token": "hi", "logprob": -0.5, "top": []}]
    # Committed, visible to another connection, journal in WAL mode.
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT example_id, completion FROM responses").fetchall() == [("ex1", "hi")]


def arith_answer(body: dict) -> dict:
    """Answer 'What is a + b?' with a rationale and the task's answer phrase."""
    question = body["messages"][-1]["content"] if "messages" in body else body["prompt"].rsplit("Q: ", 1)[1]
    a, b = re.findall(r"\d+", question)[:2]
    return ok_body(
        f"We add {a} and {b}. The answer is ( {a} + {b} ).", body, prompt_tokens=20, completion_tokens=12
    )


def examples(n: int) -> list[Annotation]:
    return [
        Annotation(id=f"q{i}", fields={"question": f"What is {i} + {i + 1}?"}, gold=f"{i} + {i + 1}")
        for i in range(n)
    ]


_CHILD = """
import sys
from stepdistill.annotate import annotate
from stepdistill.schema import Annotation
from stepdistill.tasks.arith import ArithTask
from stepdistill.teachers.config import AnnotateConfig, TeacherConfig
n, url, cache, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
anns = [Annotation(id=f"q{i}", fields={"question": f"What is {i} + {i + 1}?"}, gold=f"{i} + {i + 1}") for i in range(n)]
tcfg = TeacherConfig(backend="openai_http", model="m", base_url=url, concurrency=2)
annotate(ArithTask(), anns, tcfg, AnnotateConfig(progress=False), cache, out)
"""


def test_killed_run_resumes_without_repeating_paid_requests(scripted_server, tmp_path):
    scripted_server.answer = arith_answer
    scripted_server.default_delay = 0.15
    n = 16
    cache, out = tmp_path / "cache.sqlite", tmp_path / "train.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(n), scripted_server.url, str(cache), str(out)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    deadline = time.monotonic() + 60
    while len(scripted_server.requests) < 6 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)  # a crash: no cleanup code runs
    child.wait()
    assert not out.exists()  # the JSONL is written only at the end
    with ResponseCache(cache) as c:
        done_before = len(c)
    sent_before = len(scripted_server.requests)
    assert 4 <= done_before < n  # at most the 2 in-flight requests were lost

    tcfg = TeacherConfig(backend="openai_http", model="m", base_url=scripted_server.url, concurrency=2)
    anns, summary = annotate(ArithTask(), examples(n), tcfg, AnnotateConfig(progress=False), cache, out)

    assert summary["requests"] == n - done_before and summary["cache_hits"] == done_before
    assert len(scripted_server.requests) == sent_before + n - done_before
    # Every prompt the server answered before the crash and that reached the cache was sent once.
    sent = [json.dumps(r["body"]["messages"][-1]) for r in scripted_server.requests]
    assert len(set(sent)) == n and sum(sent.count(s) > 1 for s in set(sent)) <= sent_before - done_before
    rows = read_annotations(out)
    assert [r.id for r in rows] == [f"q{i}" for i in range(n)]
    assert all(r.teacher_label == f"( {i} + {i + 1} )" for i, r in enumerate(rows))
    assert (summary["teacher_correct"], summary["teacher_n"], summary["parse_failures"]) == (n, n, 0)
    assert summary["prompt_tokens"] == 20 * (n - done_before)

    # A third run is answered wholly from the cache and rebuilds the same file.
    before = out.read_text()
    _, again = annotate(ArithTask(), examples(n), tcfg, AnnotateConfig(progress=False), cache, out)
    assert (again["requests"], again["cache_hits"], out.read_text()) == (0, n, before)
    assert len(scripted_server.requests) == sent_before + n - done_before


def test_failed_requests_are_retried_on_the_next_run(scripted_server, tmp_path):
    from scripted_server import Reply

    scripted_server.answer = arith_answer
    scripted_server.script = [Reply(500, b"x"), Reply(503, b"y")]
    tcfg = TeacherConfig(
        backend="openai_http", model="m", base_url=scripted_server.url, concurrency=1, max_retries=0
    )
    anns, summary = annotate(
        ArithTask(), examples(4), tcfg, AnnotateConfig(progress=False), tmp_path / "c", tmp_path / "o"
    )
    assert summary["failures"] == {"http_500": 1, "http_503": 1} and summary["unanswered"] == 2
    assert [a.extra.get("teacher_error") for a in anns] == ["http_500", "http_503", None, None]
    assert summary["teacher_n"] == 2  # failed requests are not scored as wrong answers
    anns, summary = annotate(
        ArithTask(), examples(4), tcfg, AnnotateConfig(progress=False), tmp_path / "c", tmp_path / "o"
    )
    assert (summary["requests"], summary["cache_hits"], summary["failures"], summary["annotated"]) == (
        2,
        2,
        {},
        4,
    )

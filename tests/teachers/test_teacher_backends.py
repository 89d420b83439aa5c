"""Backend selection, the precomputed reader, and clear errors for optional backends not installed."""

from __future__ import annotations

import asyncio
import importlib.util
import json

import pytest

from stepdistill.errors import ConfigError, DataError, TeacherError
from stepdistill.teachers.base import Job, Prompt, Sampling
from stepdistill.teachers.config import TeacherConfig
from stepdistill.teachers.hf_local import cut_at_stop
from stepdistill.teachers.openai_http import OpenAIHTTPTeacher
from stepdistill.teachers.precomputed import PrecomputedTeacher, read_completions
from stepdistill.teachers.registry import make_teacher

P = Prompt("Q: x\nA:", ({"role": "user", "content": "x"},))


def test_precomputed_reads_completion_and_annotated_rows(tmp_path):
    folder = tmp_path / "pre"
    folder.mkdir()
    (folder / "a.jsonl").write_text(json.dumps({"id": "1", "completion": "c1"}) + "\n")
    rows = [{"id": "2", "fields": {}, "teacher_raw": "c2"}, {"id": "3", "fields": {}, "teacher_raw": None}]
    (folder / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_completions(folder) == {"1": "c1", "2": "c2"}
    teacher = make_teacher(TeacherConfig(backend="precomputed", path=str(folder), model="palm"))
    assert isinstance(teacher, PrecomputedTeacher) and teacher.identity == "precomputed:palm"

    jobs = [Job("k1", "1", 0, P), Job("k9", "9", 0, P)]

    async def collect():
        return [(j.example_id, c.text, c.error) async for j, c in teacher.stream(jobs, Sampling())]

    assert asyncio.run(collect()) == [("1", "c1", None), ("9", None, "missing_precomputed")]


def test_precomputed_errors_name_file_line_field(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "1", "completion": "a"}\n{"id": "1", "completion": "b"}\n')
    with pytest.raises(DataError, match=r"p.jsonl:2: field 'id': duplicate id '1'"):
        read_completions(path)
    path.write_text('{"id": "1", "completion": 5}\n')
    with pytest.raises(DataError, match=r"p.jsonl:1: field 'completion'"):
        read_completions(path)
    with pytest.raises(ConfigError, match="teacher.path"):
        make_teacher(TeacherConfig(backend="precomputed"))


def test_make_teacher_picks_the_backend():
    assert isinstance(make_teacher(TeacherConfig(backend="openai_http", model="m")), OpenAIHTTPTeacher)
    with pytest.raises(TeacherError, match="teacher.model"):
        make_teacher(TeacherConfig(backend="openai_http"))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_missing_is_a_clear_error():
    with pytest.raises(TeacherError, match=r"pip install 'stepdistill\[vllm\]'"):
        make_teacher(TeacherConfig(backend="vllm", model="some/model"))


@pytest.mark.skipif(importlib.util.find_spec("litellm") is not None, reason="litellm is installed")
def test_litellm_missing_is_a_clear_error():
    with pytest.raises(TeacherError, match=r"pip install 'stepdistill\[litellm\]'"):
        make_teacher(TeacherConfig(backend="litellm", model="openai/gpt-4o-mini"))


def test_cut_at_stop_uses_the_earliest_stop():
    assert cut_at_stop("a b\nQ: next\n\nc", ["\n\n", "\nQ:"]) == "a b"
    assert cut_at_stop("no stop here", ["\nQ:"]) == "no stop here"
    assert cut_at_stop("x", []) == "x"

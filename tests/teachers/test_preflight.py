"""Before any work is sent the teacher is checked: a dead server or a wrong base_url fails in
seconds with what to fix, and nothing is written when nothing was annotated."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from scripted_server import Reply

from stepdistill.cli import main
from stepdistill.data.io import write_jsonl


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class V1OnlyServer:
    """Serves /v1/models and /v1/completions only (as llama.cpp and vLLM do); 404 anywhere else."""

    def __init__(self):
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, ok: bool, body: dict) -> None:
                owner.paths.append(f"{self.command} {self.path}")
                data = json.dumps(body if ok else {"error": "not found"}).encode()
                self.send_response(200 if ok else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._reply(self.path == "/v1/models", {"data": [{"id": "m"}]})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                answer = {"choices": [{"text": "Good. So the answer is positive."}], "usage": {}}
                self._reply(self.path == "/v1/completions", answer)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"


def write_task(tmp_path: Path, base_url: str, **teacher: Any) -> Path:
    write_jsonl(
        tmp_path / "reviews.jsonl", [{"text": f"Review {i}", "sentiment": "positive"} for i in range(4)]
    )
    cfg = {
        "name": "reviews",
        "out_dir": str(tmp_path / "runs"),
        "task": {"name": "generic", "input_template": "Review: {text}", "label_field": "sentiment"},
        "data": {"train": str(tmp_path / "reviews.jsonl")},
        "teacher": {"backend": "openai_http", "model": "m", "base_url": base_url, "endpoint": "completions"}
        | teacher,
        "annotate": {"progress": False},
        "sweep": {"teacher_timing_examples": 0},
    }
    path = tmp_path / "reviews-run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_server_down_fails_in_seconds_and_writes_nothing(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}/v1"
    config = write_task(tmp_path, url)  # default retries (6, with backoff) would take minutes
    start = time.monotonic()
    assert main(["annotate", str(config)]) == 2
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err.strip()
    assert err == f"error: no server at {url} (connection refused) — is it running?"
    assert elapsed < 10  # a generous bound: the check makes one connection attempt
    assert not (tmp_path / "runs").exists()


def test_base_url_without_v1_is_named_with_the_fix(tmp_path, capsys):
    server = V1OnlyServer()
    try:
        config = write_task(tmp_path, server.root)
        start = time.monotonic()
        assert main(["annotate", str(config)]) == 2
        elapsed = time.monotonic() - start
        err = capsys.readouterr().err.strip()
        assert err == (
            f"error: 404 at {server.root}/completions: OpenAI-compatible servers usually serve under "
            f"/v1 (e.g. teacher.base_url: {server.root}/v1)"
        )
        assert elapsed < 10
        assert server.paths == ["GET /models", "POST /completions"]  # no annotation request was sent
        assert not (tmp_path / "runs").exists()

        # The same server under /v1 answers: the check passes and the run annotates.
        config = write_task(tmp_path, server.root + "/v1")
        assert main(["annotate", str(config)]) == 0
        assert capsys.readouterr().out.strip().splitlines()[-1] == (
            "annotate: 3 train, 1 valid examples; 4 annotated, 0 not parsed, 0 unanswered, "
            f"teacher accuracy 100.00% -> {tmp_path / 'runs' / 'reviews' / 'annotations'}"
        )
    finally:
        server.httpd.shutdown()


def test_nothing_is_written_when_the_teacher_answers_nothing(scripted_server, tmp_path, capsys):
    # The server is up (the check passes) but fails every request.
    scripted_server.script = [Reply(503, b"overloaded") for _ in range(10)]
    config = write_task(tmp_path, scripted_server.url, max_retries=0)
    assert main(["annotate", str(config)]) == 2
    err = capsys.readouterr().err
    assert "the teacher answered none of the 3 requests of split 'train' (http_503: 3)" in err
    assert "nothing was written" in err
    assert not (tmp_path / "runs").exists()


def test_a_server_without_a_models_endpoint_passes_with_one_tiny_request(scripted_server):
    from stepdistill.teachers.config import TeacherConfig
    from stepdistill.teachers.server_check import check_server

    # The scripted server has no GET route at all (501): it answers, so the check passes at once.
    check_server(TeacherConfig(backend="openai_http", model="m", base_url=scripted_server.url))
    assert scripted_server.requests == []

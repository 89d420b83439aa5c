"""Teacher faults in front of a real llama.cpp server (the offline SmolLM2 GGUF): a proxy of the test's
own injects a 429 with Retry-After, a 503, a connection reset in the middle of the server's real answer
and a truncated copy of it. No example may be lost or stored twice, and every injected fault must be
counted by kind."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from test_llama_server import HAVE_LLAMA, examples, free_port, short_exemplars, start_llama

from stepdistill.annotate import annotate
from stepdistill.data.io import read_annotations
from stepdistill.tasks.arith import ArithTask
from stepdistill.teachers.cache import ResponseCache
from stepdistill.teachers.config import AnnotateConfig, TeacherConfig

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not HAVE_LLAMA,
        reason="llama-cpp-python[server] is not installed: `make test` or `make setup-server` builds it",
    ),
]

# What the proxy does to the k-th request: one of each fault, then plain forwarding.
FAULTS = ["429", "forward", "503", "reset", "truncate"]


class FaultProxy:
    def __init__(self, upstream: str):
        self.upstream, self.seen = upstream, []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(
                self, status: int, data: bytes, headers: dict[str, str], cut: int | None = None
            ) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data if cut is None else data[:cut])
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                with proxy.lock:
                    k = len(proxy.seen)
                    fault = FAULTS[k] if k < len(FAULTS) else "forward"
                    proxy.seen.append(fault)
                if fault == "429":
                    return self._send(429, b'{"error": "slow down"}', {"Retry-After": "0.2"})
                if fault == "503":
                    return self._send(503, b'{"error": "unavailable"}', {})
                resp = httpx.post(
                    proxy.upstream + self.path,
                    content=raw,
                    headers={"content-type": "application/json"},
                    timeout=120,
                )
                if fault == "reset":
                    return self._send(resp.status_code, resp.content, {}, cut=len(resp.content) // 2)
                if fault == "truncate":  # a complete HTTP answer whose JSON is cut short
                    return self._send(resp.status_code, resp.content[: len(resp.content) // 2], {})
                return self._send(resp.status_code, resp.content, {})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


def test_faults_in_front_of_llama_cpp_lose_nothing_and_count_every_attempt(tmp_path):
    n = 4
    port = free_port()
    server = start_llama(port)
    proxy = FaultProxy(f"http://127.0.0.1:{port}")
    tcfg = TeacherConfig(
        backend="openai_http",
        model="smollm2",
        base_url=proxy.url,
        endpoint="completions",
        exemplars=short_exemplars(tmp_path),
        max_tokens=8,
        concurrency=1,  # the faults hit requests in a known order
        max_retries=6,
        backoff_base_s=0.05,
    )
    cache, out = tmp_path / "cache.sqlite", tmp_path / "train.jsonl"
    try:
        _, summary = annotate(
            ArithTask(),
            examples(n),
            tcfg,
            AnnotateConfig(progress=False, max_parse_failure_share=1.0),
            cache,
            out,
        )
    finally:
        server.kill()
        server.wait()
        proxy.httpd.shutdown()
    assert summary["failed_attempts"] == {
        "http_429": 1,
        "http_503": 1,
        "connection": 1,
        "malformed_response": 1,
    }
    assert (summary["unanswered"], summary["failures"], summary["retries"]) == (0, {}, 4)
    assert len(proxy.seen) == n + 4  # each example answered once, plus one request per fault
    rows = read_annotations(out)
    assert [r.id for r in rows] == [f"q{i}" for i in range(n)]
    assert all(r.teacher_raw is not None and "teacher_error" not in r.extra for r in rows)
    with ResponseCache(cache) as stored:
        assert len(stored) == n
    assert json.loads(json.dumps(summary))["requests"] == n

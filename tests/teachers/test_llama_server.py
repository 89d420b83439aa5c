"""Integration: annotate through a real llama.cpp server running the offline SmolLM2 GGUF.

The server is killed in the middle of a run and restarted; the re-run must send exactly the requests
that never got an answer. A counting proxy of the test's own sits between client and server and
records every request and the server's status for it.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from stepdistill.annotate import annotate
from stepdistill.data.io import read_annotations
from stepdistill.schema import Annotation
from stepdistill.tasks.arith import ArithTask
from stepdistill.teachers.config import AnnotateConfig, TeacherConfig

pytestmark = pytest.mark.slow

try:
    import llama_cpp.server  # noqa: F401

    HAVE_LLAMA = True
except ImportError:
    HAVE_LLAMA = False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_llama(port: int, model: str | None = None) -> subprocess.Popen:
    """A llama.cpp server on `port` serving `model` (default: the embedded SmolLM2 GGUF)."""
    from stepdistill.embedded import smollm2_gguf

    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        model or str(smollm2_gguf()),
        "--model_alias",
        "smollm2",
    ]
    # One thread for decoding and for prompts: the suite runs two test processes on two cores, and
    # llama.cpp's threads spin while they wait for each other; with a busy second core that spinning
    # cost the suite ~150 CPU-seconds (the README journey against the server: 78 CPU-s, now ~10).
    cmd += [
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        "1",
        "--n_threads_batch",
        "1",
        "--verbose",
        "False",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("llama.cpp server did not start within 90 s")


class CountingProxy:
    """Forwards POSTs to the upstream server; records (prompt, upstream status) per request."""

    def __init__(self, upstream: str):
        self.upstream, self.records = upstream, []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    resp = httpx.post(
                        proxy.upstream + self.path,
                        content=raw,
                        headers={"content-type": "application/json"},
                        timeout=120,
                    )
                    status, data = resp.status_code, resp.content
                except httpx.TransportError:
                    status, data = 502, b'{"error": "upstream down"}'
                with proxy.lock:
                    proxy.records.append((json.loads(raw)["prompt"], status))
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def answered(self) -> int:
        with self.lock:
            return sum(status == 200 for _, status in self.records)


def short_exemplars(tmp_path) -> str:
    """One short exemplar: prompt evaluation dominates on a busy 2-core machine (~10 tokens/s)."""
    shot = {
        "fields": {"question": "Ann has 1 pen and buys 2 more. How many pens has she?"},
        "rationale": "1 + 2 = 3.",
    }
    path = tmp_path / "shots.json"
    path.write_text(json.dumps({"exemplars": [{**shot, "answer": "( 1 + 2 )."}]}))
    return str(path)


def examples(n: int) -> list[Annotation]:
    return [
        Annotation(
            id=f"q{i}",
            fields={"question": f"Tom has {i + 2} pens and buys {i + 3} more. How many pens has he?"},
            gold=f"{i + 2} + {i + 3}",
        )
        for i in range(n)
    ]


@pytest.mark.skipif(
    not HAVE_LLAMA,
    reason="llama-cpp-python[server] is not installed: `make test` or `make setup-server` builds it (`make demo` does not need it)",
)
def test_kill_and_restart_server_resumes_without_repeats(tmp_path):
    n = 12
    shots = short_exemplars(tmp_path)
    port = free_port()
    server = start_llama(port)
    proxy = CountingProxy(f"http://127.0.0.1:{port}")
    tcfg = TeacherConfig(
        backend="openai_http",
        model="smollm2",
        base_url=proxy.url,
        endpoint="completions",
        exemplars=shots,
        max_tokens=8,  # short answers keep the test near a minute
        concurrency=2,
        max_retries=2,
        backoff_base_s=0.1,
    )
    acfg = AnnotateConfig(progress=False, max_parse_failure_share=1.0)  # answers cut short do not parse
    cache, out = tmp_path / "cache.sqlite", tmp_path / "train.jsonl"
    result: dict[str, Any] = {}
    run1 = threading.Thread(
        target=lambda: result.update(s=annotate(ArithTask(), examples(n), tcfg, acfg, cache, out)[1])
    )
    try:
        run1.start()
        deadline = time.monotonic() + 120
        while proxy.answered() < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.send_signal(signal.SIGKILL)
        server.wait()
        run1.join(timeout=120)
        s1, sent1 = result["s"], len(proxy.records)
        assert 4 <= n - s1["unanswered"] < n, s1
        assert sum(s1["failures"].values()) == s1["unanswered"]
        assert sent1 == s1["requests"] + s1["retries"]  # every attempt reached the proxy once

        server = start_llama(port)
        _, s2 = annotate(ArithTask(), examples(n), tcfg, acfg, cache, out)
    finally:
        server.kill()
        server.wait()
        proxy.httpd.shutdown()

    assert (s2["requests"], s2["cache_hits"], s2["failures"]) == (s1["unanswered"], n - s1["unanswered"], {})
    assert len(proxy.records) - sent1 == s2["requests"] + s2["retries"]
    answered = [prompt for prompt, status in proxy.records if status == 200]
    assert len(answered) == len(set(answered)) == n  # every item answered by the server exactly once
    rows = read_annotations(out)
    assert [r.id for r in rows] == [f"q{i}" for i in range(n)]
    assert all(r.teacher_raw is not None and "teacher_error" not in r.extra for r in rows)
    assert s2["teacher_n"] == n and s2["annotated"] + s2["parse_failures"] == n
    assert s2["completion_tokens"] > 0 and s2["prompt_tokens"] > 30 * s2["requests"]


def test_hf_local_backend_on_the_smollm2_gguf(tmp_path):
    pytest.importorskip("gguf")
    tcfg = TeacherConfig(
        backend="hf_local",
        model="embedded:smollm2",
        exemplars=short_exemplars(tmp_path),
        max_tokens=6,  # generation is ~1 step/s on a busy 2-core machine
        batch_size=3,
    )
    acfg = AnnotateConfig(progress=False, max_parse_failure_share=1.0)  # answers cut short do not parse
    rows, summary = annotate(
        ArithTask(), examples(3), tcfg, acfg, tmp_path / "c.sqlite", tmp_path / "o.jsonl"
    )
    assert (summary["requests"], summary["failures"], summary["teacher_n"]) == (3, {}, 3)
    assert summary["teacher_model"] == "hf_local:embedded:smollm2"
    assert 0 < summary["completion_tokens"] <= 3 * 6 and summary["prompt_tokens"] > 3 * 30
    assert all(r.teacher_raw and "\nQ:" not in r.teacher_raw for r in rows)
    # Greedy and cached: a second run loads no model and gives the same file.
    before = (tmp_path / "o.jsonl").read_text()
    _, again = annotate(ArithTask(), examples(3), tcfg, acfg, tmp_path / "c.sqlite", tmp_path / "o.jsonl")
    assert (again["requests"], again["cache_hits"], (tmp_path / "o.jsonl").read_text()) == (0, 3, before)

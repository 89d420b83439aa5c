"""A small OpenAI-compatible HTTP server on 127.0.0.1 that answers from a script.

Each request pops the next scripted reply (status, headers, body, delay); when the script is empty
the default reply is a well-formed chat/completions answer built by `answer(body)`. The server
records every request (body, headers, time) and the largest number of requests in flight at once.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict | None = None  # None: the default answer
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    cut: int | None = None  # send only this many body bytes, then drop the connection (a reset)


def ok_body(text: str, request: dict[str, Any], prompt_tokens: int = 10, completion_tokens: int = 5) -> dict:
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
    if "messages" in request:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": "x",
        "choices": [choice],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }


class ScriptedServer:
    def __init__(self, answer: Callable[[dict[str, Any]], dict] | None = None):
        self.script: list[Reply] = []
        self.answer = answer or (lambda body: ok_body("Two and two. The answer is ( 2 + 2 ).", body))
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.default_delay = 0.0
        self.status_for: Callable[[dict[str, Any]], int] | None = None  # status of unscripted replies
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                body = json.loads(raw)
                with server.lock:
                    server.requests.append(
                        {
                            "path": self.path,
                            "body": body,
                            "headers": dict(self.headers),
                            "t": time.monotonic(),
                        }
                    )
                    status = server.status_for(body) if server.status_for else 200
                    reply = (
                        server.script.pop(0) if server.script else Reply(status, delay=server.default_delay)
                    )
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                time.sleep(reply.delay)
                # Out of flight before the answer is written: the client may send its next
                # request as soon as it reads this one.
                with server.lock:
                    server.in_flight -= 1
                try:
                    payload = reply.body if reply.body is not None else server.answer(body)
                    data = (
                        payload
                        if isinstance(payload, bytes)
                        else (payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
                    )
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    if reply.cut is not None:
                        self.wfile.write(data[: reply.cut])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        return Handler

"""Before any work is sent: does an OpenAI-compatible server answer at teacher.base_url?

A dead server or a wrong base_url would otherwise cost every request its full round of retries
(minutes) and end in empty annotation files. `check_server` asks the models endpoint once, with a
short timeout and no retries, and raises TeacherError saying what to fix:

    no server at http://127.0.0.1:8080/v1 (connection refused) — is it running?
    404 at http://127.0.0.1:8080/models: OpenAI-compatible servers usually serve under /v1 ...

A server without a models endpoint (404 there) gets one tiny generation request instead, so only a
base_url under which neither exists is refused.
"""

from __future__ import annotations

import httpx

from stepdistill.errors import TeacherError
from stepdistill.teachers.config import TeacherConfig

CONNECT_TIMEOUT_S = 5.0  # a live local or remote server accepts a connection well within this


def _url(cfg: TeacherConfig, path: str) -> str:
    return cfg.base_url.rstrip("/") + "/" + path


def _not_found(cfg: TeacherConfig, url: str) -> TeacherError:
    hint = (
        "OpenAI-compatible servers usually serve under /v1 (e.g. teacher.base_url: "
        f"{cfg.base_url.rstrip('/')}/v1)"
        if not cfg.base_url.rstrip("/").endswith("/v1")
        else "check teacher.base_url and teacher.endpoint"
    )
    return TeacherError(f"404 at {url}: {hint}")


def _refused(cfg: TeacherConfig, status: int, url: str) -> TeacherError:
    key = f"the key in ${cfg.api_key_env}" if cfg.api_key_env else "no key (set teacher.api_key_env)"
    return TeacherError(f"HTTP {status} at {url}: the server refused the request, sent with {key}")


def _tiny_request(client: httpx.Client, cfg: TeacherConfig) -> httpx.Response:
    """One generation of a single token: proves the endpoint exists when /models does not."""
    if cfg.endpoint == "chat":
        body = {"model": cfg.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        return client.post(_url(cfg, "chat/completions"), json=body, timeout=cfg.timeout_s)
    body = {"model": cfg.model, "prompt": "Hi", "max_tokens": 1}
    return client.post(_url(cfg, "completions"), json=body, timeout=cfg.timeout_s)


def check_server(cfg: TeacherConfig, headers: dict[str, str] | None = None) -> None:
    """Raise TeacherError, in seconds, unless a server answers at cfg.base_url."""
    url = _url(cfg, "models")
    timeout = httpx.Timeout(min(cfg.timeout_s, 10.0), connect=CONNECT_TIMEOUT_S)
    try:
        with httpx.Client(headers=headers or {}, timeout=timeout) as client:
            resp = client.get(url)
            if resp.status_code == 404:
                resp = _tiny_request(client, cfg)
                url = str(resp.request.url)
    except httpx.ConnectError as err:
        reason = "connection refused" if "refused" in str(err).lower() else str(err) or "cannot connect"
        raise TeacherError(f"no server at {cfg.base_url} ({reason}) — is it running?") from None
    except httpx.TimeoutException:
        raise TeacherError(
            f"no answer from {cfg.base_url} within {timeout.read:g} s — is the server running and reachable?"
        ) from None
    except httpx.TransportError as err:
        raise TeacherError(f"cannot reach {cfg.base_url}: {type(err).__name__}: {err}") from None
    if resp.status_code == 404:
        raise _not_found(cfg, url)
    if resp.status_code in (401, 403):
        raise _refused(cfg, resp.status_code, url)

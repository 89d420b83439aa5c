"""Teacher over any OpenAI-compatible HTTP endpoint: vLLM, llama.cpp server, Ollama, OpenAI.

A fixed pool of `concurrency` workers shares one httpx.AsyncClient. Each request is retried on
408/409/429/5xx, timeouts, connection errors and malformed 200 answers (bad JSON, an error object,
no choices, or a model other than the one that gave the first answer), with exponential backoff and
jitter, honouring Retry-After (which also pauses the other workers). Every failed attempt is counted
by kind in `Completion.failed_attempts`. 401/403/404 stop the run at once:
every further request would fail the same way. The API key is read from the environment variable
named by `api_key_env`; it is sent in the Authorization header and nowhere else.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from stepdistill.errors import TeacherError
from stepdistill.teachers.base import Completion, Job, Sampling, Teacher
from stepdistill.teachers.config import TeacherConfig
from stepdistill.teachers.limits import RateLimiter, backoff_delay, is_retryable, parse_retry_after
from stepdistill.teachers.server_check import check_server

FATAL_STATUS = {401: "refused the credentials", 403: "refused access", 404: "has no such model or path"}


class MalformedResponse(ValueError):
    """A 200 answer without the fields an OpenAI-compatible server returns; `kind` says which way:
    error_body (an {"error": ...} object), empty_choices, or malformed_response."""

    def __init__(self, message: str, kind: str = "malformed_response"):
        super().__init__(message)
        self.kind = kind


def _convert_logprobs(choice: dict[str, Any], endpoint: str) -> list[dict[str, Any]] | None:
    """Per-token logprobs in the schema's format: [{"token", "logprob", "top": [[tok, lp], ...]}]."""
    lp = choice.get("logprobs")
    if not lp:
        return None
    if endpoint == "chat":
        return [
            {
                "token": t["token"],
                "logprob": float(t["logprob"]),
                "top": [[c["token"], float(c["logprob"])] for c in t.get("top_logprobs") or []],
            }
            for t in lp.get("content") or []
        ]
    tops = lp.get("top_logprobs") or [None] * len(lp["tokens"])
    return [
        {"token": tok, "logprob": float(val), "top": [[k, float(v)] for k, v in (top or {}).items()]}
        for tok, val, top in zip(lp["tokens"], lp["token_logprobs"], tops)
    ]


def parse_response(body: Any, endpoint: str) -> Completion:
    """Read text, usage and logprobs from a chat or completions answer; MalformedResponse if absent."""
    return parse_choices(body, endpoint, 1)[0]


def parse_choices(body: Any, endpoint: str, n: int) -> list[Completion]:
    """The n completions of an answer to a request with `n` (one prompt, n samples), in choice order.
    The prompt's tokens are counted once (on the first); completion tokens are split evenly."""
    if isinstance(body, dict) and body.get("error") and not body.get("choices"):
        raise MalformedResponse(f"error in a 200 answer: {str(body['error'])[:160]}", "error_body")
    if isinstance(body, dict) and body.get("choices") == []:
        raise MalformedResponse("no choices in the answer", "empty_choices")
    try:
        choices = sorted(body["choices"], key=lambda c: c.get("index", 0))
    except (KeyError, TypeError, AttributeError) as err:
        raise MalformedResponse(f"{type(err).__name__}: {err}") from None
    if len(choices) < n:  # a server that ignores n answers one choice
        raise MalformedResponse(f"{len(choices)} choices for n={n}", "missing_choices")
    try:
        usage = body.get("usage") or {}
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        out = []
        for i, choice in enumerate(choices[:n]):
            text = choice["message"]["content"] if endpoint == "chat" else choice["text"]
            if not isinstance(text, str):
                raise TypeError("text is not a string")
            share = completion // n + (completion % n if i == 0 else 0)
            out.append(Completion(text=text, prompt_tokens=prompt if i == 0 else 0, completion_tokens=share,
                                  logprobs=_convert_logprobs(choice, endpoint)))  # fmt: skip
        return out
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
        raise MalformedResponse(f"{type(err).__name__}: {err}") from None


class OpenAIHTTPTeacher(Teacher):
    def __init__(self, cfg: TeacherConfig, transport: httpx.AsyncBaseTransport | None = None, seed: int = 0):
        if not cfg.model:
            raise TeacherError("teacher.model: the openai_http backend needs the served model name")
        self.cfg = cfg
        self.identity = f"openai_http:{cfg.model}"
        self.endpoint = cfg.endpoint
        self.use_chat = cfg.endpoint == "chat"
        self.limiter = RateLimiter(cfg.requests_per_minute, cfg.tokens_per_minute)
        self._rng = random.Random(seed)  # jitter only; seeded so test runs are repeatable
        self._transport = transport
        self._headers = {}
        self.served_model: str | None = None  # the model name of the first answer, see _check_model
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise TeacherError(f"teacher.api_key_env: environment variable {cfg.api_key_env} is not set")
            self._headers["Authorization"] = f"Bearer {key}"

    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> OpenAIHTTPTeacher:
        return cls(cfg)

    def preflight(self) -> None:
        """Check once, in seconds, that a server answers at base_url (teachers/server_check.py)."""
        if self._transport is None:
            check_server(self.cfg, self._headers)

    def request_body(self, job: Job, sampling: Sampling) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.cfg.model,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if self.use_chat:
            body["messages"] = list(job.prompt.messages)
        else:
            body["prompt"] = job.prompt.text
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if (seed := sampling.seed_for(job.sample)) is not None:
            body["seed"] = seed
        if sampling.top_logprobs is not None:
            if self.use_chat:
                body["logprobs"], body["top_logprobs"] = True, sampling.top_logprobs
            else:
                body["logprobs"] = sampling.top_logprobs
        body.update(self.cfg.extra_body)
        return body

    def groups(self, jobs: Sequence[Job], sampling: Sampling) -> list[list[Job]]:
        """The requests to send: one per job, or (teacher.samples_per_request, temperature > 0) one
        per prompt holding all its samples, sent with n = the number of samples."""
        if not self.cfg.samples_per_request or sampling.temperature <= 0:
            return [[job] for job in jobs]
        by_prompt: dict[Any, list[Job]] = {}
        for job in jobs:
            by_prompt.setdefault((job.example_id, job.prompt.text, repr(job.prompt.messages)), []).append(job)
        return list(by_prompt.values())

    async def stream(self, jobs: Sequence[Job], sampling: Sampling) -> AsyncIterator[tuple[Job, Completion]]:
        todo: asyncio.Queue[list[Job]] = asyncio.Queue()
        for group in self.groups(jobs, sampling):
            todo.put_nowait(group)
        done: asyncio.Queue[tuple[Job, Completion] | BaseException] = asyncio.Queue()
        limits = httpx.Limits(
            max_connections=self.cfg.concurrency, max_keepalive_connections=self.cfg.concurrency
        )
        async with httpx.AsyncClient(
            base_url=self.cfg.base_url.rstrip("/") + "/",
            headers=self._headers,
            timeout=self.cfg.timeout_s,
            limits=limits,
            transport=self._transport,
        ) as client:
            workers = [
                asyncio.create_task(self._worker(client, todo, done, sampling))
                for _ in range(min(self.cfg.concurrency, todo.qsize()))
            ]
            try:
                for _ in range(len(jobs)):
                    item = await done.get()
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(
        self, client: httpx.AsyncClient, todo: asyncio.Queue, done: asyncio.Queue, sampling: Sampling
    ):
        while True:
            try:
                group = todo.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                for job, comp in zip(group, await self.send(client, group, sampling)):
                    await done.put((job, comp))
            except Exception as err:  # a fatal error ends the whole stream, reported once
                await done.put(err)
                return

    def _estimate_tokens(self, job: Job, sampling: Sampling) -> int:
        # ~4 characters per token: only the rate limiter uses this, corrected by the real usage.
        chars = (
            len(job.prompt.text) if not self.use_chat else sum(len(m["content"]) for m in job.prompt.messages)
        )
        return chars // 4 + sampling.max_tokens

    async def send(self, client: httpx.AsyncClient, group: list[Job], sampling: Sampling) -> list[Completion]:
        """One request with retries for the jobs of `group` (samples of one prompt: n = len(group),
        seeded by the first); a Completion per job (maybe failed), or raises TeacherError."""
        job, n = group[0], len(group)
        body = self.request_body(job, sampling)
        if n > 1:
            body["n"] = n
        path = "chat/completions" if self.use_chat else "completions"
        estimate = self._estimate_tokens(job, sampling) + (n - 1) * sampling.max_tokens
        kind, detail = "", None
        fails: dict[str, int] = {}
        for attempt in range(self.cfg.max_retries + 1):
            if kind:  # the previous attempt failed: count it by kind
                fails[kind] = fails.get(kind, 0) + 1
                kind = ""
            await self.limiter.acquire(estimate)
            retry_after = None
            try:
                resp = await client.post(path, json=body)
            except httpx.TimeoutException as err:
                kind, detail = "timeout", type(err).__name__
            except httpx.TransportError as err:
                kind, detail = "connection", f"{type(err).__name__}: {err}"[:200]
            else:
                status = resp.status_code
                if status == 200:
                    try:
                        answer = resp.json()
                        comps = parse_choices(answer, self.endpoint, n)
                        self._check_model(answer)
                    except MalformedResponse as err:
                        kind, detail = err.kind, str(err)[:200]
                    except ValueError as err:
                        kind, detail = "malformed_response", str(err)[:200]
                    else:
                        self.limiter.settle(
                            estimate, sum(c.prompt_tokens + c.completion_tokens for c in comps)
                        )
                        # the request's retries and failed attempts are counted once, on its first
                        comps[0].retries, comps[0].failed_attempts = attempt, fails
                        return comps
                elif status in FATAL_STATUS:
                    raise TeacherError(
                        f"{self.cfg.base_url} {FATAL_STATUS[status]} (HTTP {status}) for model "
                        f"'{self.cfg.model}': {resp.text[:200]}"
                    )
                elif is_retryable(status):
                    kind, detail = f"http_{status}", resp.text[:200]
                    retry_after = parse_retry_after(resp.headers.get("retry-after"))
                    if retry_after is not None:
                        self.limiter.pause(retry_after)
                else:  # other 4xx: this request is wrong and will stay wrong; count it, go on
                    fails[f"http_{status}"] = fails.get(f"http_{status}", 0) + 1
                    return _failed(f"http_{status}", attempt, resp.text[:200], fails, n)
            if attempt == self.cfg.max_retries:
                break
            delay = backoff_delay(attempt, self.cfg.backoff_base_s, self.cfg.backoff_max_s, self._rng)
            await asyncio.sleep(retry_after if retry_after is not None else delay)
        fails[kind] = fails.get(kind, 0) + 1
        return _failed(kind, self.cfg.max_retries, detail, fails, n)

    def _check_model(self, answer: Any) -> None:
        """Answers must keep coming from the model that gave the first one: a server that switches
        models mid-run (a redeploy, a load balancer over mixed backends) would mix two teachers."""
        served = answer.get("model") if isinstance(answer, dict) else None
        if not isinstance(served, str) or not served:
            return
        if self.served_model is None:
            self.served_model = served
        elif served != self.served_model:
            raise MalformedResponse(
                f"answer from model '{served}', earlier answers from '{self.served_model}'", "model_changed"
            )


def _failed(kind: str, retries: int, detail: str | None, fails: dict[str, int], n: int) -> list[Completion]:
    """A failed request's n completions (each counts as failed; retries and attempts on the first)."""
    comps = [Completion.failed(kind, retries if i == 0 else 0, detail) for i in range(n)]
    comps[0].failed_attempts = fails
    return comps

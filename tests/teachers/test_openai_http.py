"""The OpenAI-compatible client against a scripted local server: retries, Retry-After, limits, errors."""

from __future__ import annotations

import random
import time

import pytest
from scripted_server import Reply, ok_body

from stepdistill.errors import TeacherError
from stepdistill.teachers.base import Prompt, Sampling
from stepdistill.teachers.config import TeacherConfig
from stepdistill.teachers.limits import RateLimiter, backoff_delay, parse_retry_after
from stepdistill.teachers.openai_http import OpenAIHTTPTeacher

PROMPT = Prompt(
    text="Q: 2+2?\nA:", messages=({"role": "system", "content": "s"}, {"role": "user", "content": "2+2?"})
)
SAMPLING = Sampling(max_tokens=16, stop=("\nQ:",), seed=7)


def teacher(server, **kw) -> OpenAIHTTPTeacher:
    opts = dict(
        backend="openai_http", model="m", base_url=server.url, backoff_base_s=0.01, backoff_max_s=0.05
    )
    opts.update(kw)
    return OpenAIHTTPTeacher(TeacherConfig(**opts))


def one(t: OpenAIHTTPTeacher, n: int = 1, sampling: Sampling = SAMPLING):
    return t.generate([PROMPT], n, sampling)[0]


def test_5xx_retried_then_answer(scripted_server):
    scripted_server.script = [Reply(503, b"busy"), Reply(502, b"bad gateway")]
    [comp] = one(teacher(scripted_server))
    assert comp.ok and comp.text == "Two and two. The answer is ( 2 + 2 )."
    assert (comp.retries, comp.prompt_tokens, comp.completion_tokens) == (2, 10, 5)
    assert len(scripted_server.requests) == 3


def test_retry_after_is_honoured(scripted_server):
    scripted_server.script = [Reply(429, b"slow down", headers={"Retry-After": "1"})]
    start = time.monotonic()
    [comp] = one(teacher(scripted_server))
    times = [r["t"] for r in scripted_server.requests]
    assert comp.ok and comp.retries == 1
    # The backoff alone would wait <= 0.05 s; the server asked for 1 s.
    assert times[1] - times[0] >= 0.95
    assert time.monotonic() - start < 5


def test_exhausted_retries_count_as_failure(scripted_server):
    scripted_server.script = [Reply(500, b"boom")] * 3
    [comp] = one(teacher(scripted_server, max_retries=2))
    assert (comp.ok, comp.error, comp.retries, comp.text) == (False, "http_500", 2, None)
    assert len(scripted_server.requests) == 3


def test_client_error_is_not_retried(scripted_server):
    scripted_server.script = [Reply(400, b'{"error": "context too long"}')]
    [comp] = one(teacher(scripted_server))
    assert comp.error == "http_400" and "context too long" in comp.detail
    assert len(scripted_server.requests) == 1


def test_bad_key_stops_the_run_without_showing_the_key(scripted_server, monkeypatch):
    monkeypatch.setenv("TEST_TEACHER_KEY", "sk-secret-123")
    scripted_server.script = [Reply(401, b'{"error": "invalid key"}')]
    with pytest.raises(TeacherError) as info:
        one(teacher(scripted_server, api_key_env="TEST_TEACHER_KEY"))
    assert "sk-secret-123" not in str(info.value) and "HTTP 401" in str(info.value)
    assert scripted_server.requests[0]["headers"]["Authorization"] == "Bearer sk-secret-123"


def test_missing_key_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(TeacherError, match="NO_SUCH_KEY_VAR is not set"):
        OpenAIHTTPTeacher(TeacherConfig(backend="openai_http", model="m", api_key_env="NO_SUCH_KEY_VAR"))


def test_malformed_answers_are_retried_then_counted(scripted_server):
    bad = [
        Reply(200, b"<html>not json"),
        Reply(200, {"choices": []}),
        Reply(200, {"choices": [{"message": {}}]}),
    ]
    scripted_server.script = list(bad)
    [comp] = one(teacher(scripted_server))
    assert comp.ok and comp.retries == 3
    scripted_server.script = list(bad)
    [comp] = one(teacher(scripted_server, max_retries=1))
    # the last attempt's kind is the failure; every attempt is counted by its own kind
    assert (comp.error, comp.retries) == ("empty_choices", 1)
    assert comp.failed_attempts == {"malformed_response": 1, "empty_choices": 1}


def test_timeout_is_retried(scripted_server):
    scripted_server.script = [Reply(delay=1.0)]
    [comp] = one(teacher(scripted_server, timeout_s=0.3))
    assert comp.ok and comp.retries == 1


def test_connection_refused_counts_as_failure(scripted_server):
    url = scripted_server.url
    scripted_server.close()
    t = OpenAIHTTPTeacher(
        TeacherConfig(backend="openai_http", model="m", base_url=url, max_retries=2, backoff_base_s=0.01)
    )
    [comp] = one(t)
    assert (comp.error, comp.retries) == ("connection", 2)


def test_concurrency_is_bounded(scripted_server):
    scripted_server.default_delay = 0.2
    comps = teacher(scripted_server, concurrency=3).generate([PROMPT] * 9, 1, SAMPLING)
    assert all(c[0].ok for c in comps)
    assert len(scripted_server.requests) == 9 and scripted_server.max_in_flight == 3


def test_requests_per_minute_limit(scripted_server):
    # 120/min = one every 0.5 s after a 1 s burst allowance: requests 1-2 at once, then 0.5 s apart.
    teacher(scripted_server, concurrency=5, requests_per_minute=120).generate([PROMPT] * 5, 1, SAMPLING)
    t = sorted(r["t"] for r in scripted_server.requests)
    assert t[4] - t[0] >= 1.4
    assert t[1] - t[0] < 0.3


def test_request_body_chat_and_completions(scripted_server):
    sampling = Sampling(max_tokens=16, temperature=0.7, stop=("\nQ:",), seed=7, top_logprobs=2)
    one(teacher(scripted_server), n=2, sampling=sampling)
    bodies = sorted((r["body"] for r in scripted_server.requests), key=lambda b: b["seed"])
    assert [b["seed"] for b in bodies] == [7, 8]  # sample i uses seed + i
    assert bodies[0]["messages"] == list(PROMPT.messages) and bodies[0]["stop"] == ["\nQ:"]
    assert (bodies[0]["logprobs"], bodies[0]["top_logprobs"], bodies[0]["temperature"]) == (True, 2, 0.7)
    one(
        teacher(scripted_server, endpoint="completions", extra_body={"repeat_penalty": 1.1}),
        sampling=sampling,
    )
    last = scripted_server.requests[-1]
    assert last["path"] == "/v1/completions" and last["body"]["prompt"] == PROMPT.text
    assert (last["body"]["logprobs"], last["body"]["repeat_penalty"]) == (2, 1.1)


def test_logprobs_are_stored_in_schema_format(scripted_server):
    chat = ok_body("A", {"messages": []})
    chat["choices"][0]["logprobs"] = {
        "content": [
            {
                "token": "A",
                "logprob": -0.1,
                "top_logprobs": [{"token": "A", "logprob": -0.1}, {"token": "B", "logprob": -2.5}],
            }
        ]
    }
    text = ok_body("A", {})
    text["choices"][0]["logprobs"] = {
        "tokens": ["A"],
        "token_logprobs": [-0.1],
        "top_logprobs": [{"A": -0.1, "B": -2.5}],
    }
    scripted_server.script = [Reply(200, chat), Reply(200, text)]
    expected = [{"token": "A", "logprob": -0.1, "top": [["A", -0.1], ["B", -2.5]]}]
    assert one(teacher(scripted_server))[0].logprobs == expected
    assert one(teacher(scripted_server, endpoint="completions"))[0].logprobs == expected


def test_backoff_delay_doubles_with_equal_jitter():
    rng = random.Random(0)
    for attempt, cap in [(0, 1.0), (1, 2.0), (2, 4.0), (6, 30.0)]:
        d = backoff_delay(attempt, 1.0, 30.0, rng)
        assert cap / 2 <= d <= cap


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("99999") == 600.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    # An HTTP date 20 s after "now" (Sun, 06 Nov 1994 08:49:37 GMT is 784111777).
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:57 GMT", now=784111777.0) == 20.0


def test_rate_limiter_schedule_exact():
    now = [0.0]
    lim = RateLimiter(requests_per_minute=60, tokens_per_minute=600, burst_s=1.0, clock=lambda: now[0])
    # rpm 60 -> 1 s per request; tpm 600 -> 0.1 s per token.
    assert lim.reserve(5) == 0.0  # request schedule 1.0, token schedule 0.5
    assert lim.reserve(5) == 1.0  # request schedule 2.0 -> wait 2 - 1 burst
    assert lim.reserve(30) == 3.0  # token schedule 1.0 + 3.0 = 4.0 -> wait 3
    lim.settle(30, 10)  # the server used 20 fewer tokens: schedule back to 2.0
    now[0] = 10.0
    lim.pause(2.5)
    assert lim.reserve(1) == 2.5


def test_samples_per_request_sends_one_request_with_n(scripted_server):
    """teacher.samples_per_request: 3 samples of each of 2 prompts go as 2 requests with n = 3; the
    choices map to the samples in index order, the prompt's tokens are counted once; a server that
    answers fewer choices than n is retried, then counted as failed for every sample."""

    def answer(body):
        n = body.get("n", 1)
        out = ok_body("", body, prompt_tokens=10, completion_tokens=7 * n)
        out["choices"] = [
            {
                "index": i,
                "message": {"role": "assistant", "content": f"{body['messages'][-1]['content']} #{i}"},
            }
            for i in reversed(range(n))  # out of order: the client sorts by index
        ]
        return out

    scripted_server.answer = answer
    sampling = Sampling(max_tokens=16, temperature=0.7, seed=7)
    other = Prompt(text="Q: 3+3?\nA:", messages=({"role": "user", "content": "3+3?"},))
    got = teacher(scripted_server, samples_per_request=True).generate([PROMPT, other], 3, sampling)
    assert [[c.text for c in per] for per in got] == [
        [f"{q} #{i}" for i in range(3)] for q in ("2+2?", "3+3?")
    ]
    assert sorted((r["body"]["n"], r["body"]["seed"]) for r in scripted_server.requests) == [(3, 7), (3, 7)]
    assert [c.prompt_tokens for c in got[0]] == [10, 0, 0] and sum(c.completion_tokens for c in got[0]) == 21
    # greedy (or the option off): one request per sample, as before
    scripted_server.requests.clear()
    teacher(scripted_server).generate([PROMPT], 3, sampling)
    assert len(scripted_server.requests) == 3 and all("n" not in r["body"] for r in scripted_server.requests)
    # a server that ignores n (one choice back)
    scripted_server.answer = lambda body: ok_body("only one", body)
    scripted_server.requests.clear()
    short = teacher(scripted_server, samples_per_request=True, max_retries=1).generate([PROMPT], 2, sampling)[
        0
    ]
    assert [c.error for c in short] == ["missing_choices"] * 2 and len(scripted_server.requests) == 2

"""On-policy scoring through vLLM's `prompt_logprobs` (kd.server.api: vllm) against the white-box teacher.

The server here answers /v1/completions in vLLM's documented format (choices[0].prompt_logprobs: per
prompt token, None for the first, then {token id: {"logprob", "rank", "decoded_token"}} holding the
top-k and the prompt token itself), computed by the tiny teacher model in float32; the white-box path
runs the same model. Token ids go to the server as they are, so every sampled token is scored, the
non-canonical split included, and both paths agree to float precision. The refusal of another
vocabulary is also checked on llama.cpp's echo answers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from stepdistill.errors import ConfigError
from stepdistill.kd.config import KDConfig
from stepdistill.kd.whitebox import load_teacher
from stepdistill.training.config import StudentConfig
from stepdistill.training.models import load_student
from stepdistill.training.step import target_hidden

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "teachers"))
from scripted_server import ScriptedServer  # noqa: E402
from test_on_policy_server import _rows, _term  # noqa: E402

K = 5


def vllm_answer(model, decode):
    """A /v1/completions answer with vLLM's prompt_logprobs, from `model` (decode: id -> its text)."""

    @torch.no_grad()
    def answer(body: dict) -> dict:
        ids, k = body["prompt"], body["prompt_logprobs"]
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        entries: list[dict | None] = [None]
        for i in range(1, len(ids)):
            dist = logprobs[i - 1]  # the distribution predicting token i
            keep = dict.fromkeys([ids[i], *torch.topk(dist, k).indices.tolist()])
            entries.append(
                {
                    str(t): {
                        "logprob": float(dist[t]),
                        "rank": int((dist > dist[t]).sum()) + 1,
                        "decoded_token": decode(t),
                    }
                    for t in keep
                }  # fmt: skip
            )
        choice = {
            "index": 0,
            "text": "",
            "logprobs": None,
            "finish_reason": "length",
            "prompt_logprobs": entries,
        }
        return {"id": "cmpl-1", "object": "text_completion", "choices": [choice]}

    return answer


def _cfg(url: str) -> KDConfig:
    return KDConfig(source="server", server={"base_url": url, "model": "m", "api": "vllm"}, topk=K,
                    tasks=["label", "rationale"], on_policy={})  # fmt: skip


def test_vllm_prompt_logprobs_equal_whitebox_on_every_sampled_token(tiny_causal_dir):
    student = load_student(StudentConfig(model=str(tiny_causal_dir)))
    tok = student.tokenizer
    teacher, kind = load_teacher(str(tiny_causal_dir))
    server = ScriptedServer(vllm_answer(teacher, lambda t: tok.decode([t])))
    try:
        batch, samples = _rows(tok)
        at = target_hidden(student.model, batch, "causal")
        served = _term(_cfg(server.url), student).token_targets(batch, at)
        white_cfg = KDConfig(teacher_model=str(tiny_causal_dir), tasks=["label", "rationale"], on_policy={})
        white = _term(white_cfg, student, teacher, kind).token_targets(batch, at)
    finally:
        server.close()
    # token ids in: the server scored the student's ids, every one (the probe, then one call per row)
    body = server.requests[-1]["body"]
    assert isinstance(body["prompt"], list) and body["prompt_logprobs"] == K and "echo" not in body
    own = batch.sampled[at.rows]
    assert int(own.sum()) == sum(len(s) for s in samples)
    assert bool(served.valid[own].all())  # the third row's non-canonical split is scored as well
    v = served.valid
    ids, server_lp = served.ids[v], served.logprobs[v]
    white_lp = torch.log_softmax(white.teacher_logits[v].float(), -1)
    kept = ids >= 0
    torch.testing.assert_close(
        server_lp[kept], white_lp.gather(-1, ids.clamp(min=0))[kept], atol=1e-5, rtol=0
    )
    # each row holds the teacher's top-k at that position, plus the scored token where it is outside
    top = white_lp.topk(K, -1).indices
    assert all(set(top[i].tolist()) <= set(ids[i][kept[i]].tolist()) for i in range(len(top)))
    assert set(kept.sum(-1).tolist()) <= {K, K + 1}


def test_vllm_server_with_another_vocabulary_is_refused_naming_both(tiny_causal_dir):
    student = load_student(StudentConfig(model=str(tiny_causal_dir)))
    tok = student.tokenizer
    teacher, _ = load_teacher(str(tiny_causal_dir))
    server = ScriptedServer(vllm_answer(teacher, lambda t: tok.decode([(t + 7) % len(tok)])))
    try:
        with pytest.raises(
            ConfigError, match=r"teacher's vocabulary \('m' at .*differs from the student vocabulary"
        ):
            _term(_cfg(server.url), student)
    finally:
        server.close()


def test_a_server_without_prompt_logprobs_fails_the_preflight_quoting_it(tiny_causal_dir):
    server = ScriptedServer()  # a plain completion, as a server that ignores prompt_logprobs answers
    student = load_student(StudentConfig(model=str(tiny_causal_dir)))
    try:
        with pytest.raises(ConfigError, match=r"with prompt_logprobs, kd.server.api vllm.*The answer is"):
            _term(_cfg(server.url), student)
    finally:
        server.close()
    assert server.requests[0]["body"]["prompt_logprobs"] == K


def test_llama_cpp_echo_reading_a_token_as_other_text_is_refused_naming_both(tiny_causal_dir):
    """The same refusal on llama.cpp's echo answers: every probe token but the last reads as the
    student's text (and its log-probs as the distribution before it), the last as other text."""
    from stepdistill.kd.preflight import PROBE

    student = load_student(StudentConfig(model=str(tiny_causal_dir)))
    tok = student.tokenizer
    ids = tok(PROBE, add_special_tokens=False)["input_ids"]
    texts = [tok.decode([i]) for i in ids]

    def echo(body: dict) -> dict:
        top = [{texts[i + 1]: -0.5} for i in range(len(ids) - 1)] + [{"x": -1.0}]
        logprobs = {"tokens": texts[:-1] + ["another text"], "top_logprobs": top}
        return {"id": "cmpl-1", "choices": [{"index": 0, "text": "", "logprobs": logprobs}]}

    server = ScriptedServer(echo)
    cfg = KDConfig(source="server", server={"base_url": server.url, "model": "m"}, topk=K, on_policy={})
    try:
        with pytest.raises(
            ConfigError, match=rf"token {len(ids) - 1} of the probe, id {ids[-1]}, reads 'another text'"
        ):
            _term(cfg, student)
    finally:
        server.close()

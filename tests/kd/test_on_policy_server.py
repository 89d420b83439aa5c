"""On-policy scoring through a real llama.cpp server (kd.source: server) against the white-box teacher.

The server runs the shipped SmolLM2-135M-Instruct Q4_1 GGUF; the white-box teacher is the same GGUF
converted to safetensors (its Q4_1 weights dequantized to float32). Both score the same student rows.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from stepdistill.errors import ConfigError
from stepdistill.kd.config import KDConfig
from stepdistill.kd.losses import sparse_kd_per_token
from stepdistill.kd.on_policy import OnPolicyTerm, Samples, with_samples
from stepdistill.kd.term import KDTerm
from stepdistill.kd.whitebox import load_teacher
from stepdistill.training.batching import Encoded, collate, encode_source
from stepdistill.training.config import StudentConfig, TrainConfig
from stepdistill.training.models import load_student
from stepdistill.training.step import _project, target_hidden

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "teachers"))
from scripted_server import ScriptedServer  # noqa: E402
from test_llama_server import HAVE_LLAMA, free_port, start_llama  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python[server] not installed"),
]

K = 20


@pytest.fixture(scope="module")
def llama_url():
    port = free_port()
    server = start_llama(port)
    yield f"http://127.0.0.1:{port}/v1"
    server.kill()
    server.wait()


def _term(cfg: KDConfig, student, teacher=None, kind=None) -> OnPolicyTerm:
    return OnPolicyTerm(KDTerm(cfg, teacher=teacher, teacher_kind=kind), TrainConfig(method="step_by_step"),
                        student.tokenizer, student.model, "causal")  # fmt: skip


def _rows(tok):
    """Three sampled rows: two tokenised as the server does, one split off the canonical way."""
    tc = TrainConfig()
    src = [encode_source(tok, t, tc, "causal") for t in
           ("predict: Q: What is 12 + 7?", "explain: Q: What is 12 + 7?", "explain: Q: What is 3 + 4?")]  # fmt: skip
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    samples = [
        ids("19") + [tok.eos_token_id],
        ids("12 + 7 = 19. So the answer is 19.") + [tok.eos_token_id],
        ids("3 + 4 = 7. So the") + ids(" ans") + ids("wer") + ids(" is 7."),  # " answer" split in two
    ]
    data = [Encoded(s, ids("x") + [tok.eos_token_id], t, f"q{i}\t{'label' if t == 0 else 'rationale'}")
            for i, (s, t) in enumerate(zip(src, (0, 1, 1)))]  # fmt: skip
    batch = collate([[e] for e in data], tok.pad_token_id, "causal")
    return with_samples(batch, [0, 1, 2], Samples(samples, [False, False, True]), tok.pad_token_id), samples


def test_on_policy_server_scores_equal_whitebox_on_the_same_tokens(
    llama_url, tiny_causal_dir, smol_tokenizer_dir
):
    student = load_student(StudentConfig(model=str(tiny_causal_dir)))
    tok = student.tokenizer
    batch, samples = _rows(tok)
    server_cfg = KDConfig(source="server", server={"base_url": llama_url, "model": "smollm2"}, topk=K,
                          tasks=["label", "rationale"], on_policy={})  # fmt: skip
    white_cfg = KDConfig(teacher_model=str(smol_tokenizer_dir), tasks=["label", "rationale"], on_policy={})
    teacher, kind = load_teacher(str(smol_tokenizer_dir))
    served = _term(server_cfg, student).token_targets(
        batch, at := target_hidden(student.model, batch, "causal")
    )
    white = _term(white_cfg, student, teacher, kind).token_targets(batch, at)
    own = batch.sampled[at.rows]
    # Scored: every sampled token of the first two rows; the third up to its non-canonical split.
    n1, n2 = len(samples[0]), len(samples[1])
    split = len(tok("3 + 4 = 7. So the", add_special_tokens=False)["input_ids"])
    expected = [True] * (n1 + n2) + [True] * split + [False] * (len(samples[2]) - split)
    assert served.valid[own].tolist() == expected and bool(white.valid[own].all())
    v = served.valid
    # The teacher's log-probs at the server's top-k ids: Q4_1 on llama.cpp vs its dequantized weights.
    ids, server_lp = served.ids[v], served.logprobs[v]
    white_lp = torch.log_softmax(white.teacher_logits[v], -1).gather(-1, ids.clamp(min=0))
    kept = ids >= 0
    # llama.cpp multiplies the Q4_1 weights with activations quantised to 8 bits (Q8_1) layer after
    # layer, the white-box teacher runs the same weights dequantized in fp32: log-probs drift by
    # ~0.1 nat on average over the top-20 (up to ~0.7 nat far in the tail, measured), less where the
    # teacher puts its mass (p > 0.1), which is what the KD term weighs.
    likely = kept & (white_lp.exp() > 0.1)
    diff = (server_lp - white_lp)[likely].abs()
    assert float(diff.max()) < 0.5 and float(diff.mean()) < 0.1  # measured: 0.31 and 0.064
    # Top-k on both sides, the same buckets (the server's ids), the same student logits: the
    # per-token KD terms agree up to the quantisation drift above.
    s_logits = _project(student.model, at.hidden[v]).detach()
    white_at_ids = white_lp.masked_fill(~kept, float("-inf"))
    kd_white = sparse_kd_per_token(s_logits, ids, white_at_ids, "forward_kl", mode="rest")
    kd_server = sparse_kd_per_token(s_logits, ids, server_lp, "forward_kl", mode="rest")
    rel = (kd_server - kd_white).abs() / kd_white.abs().clamp(min=1e-3)
    assert float(rel.median()) < 0.02 and float(rel.max()) < 0.2  # measured: 0.5% and 9%


def test_on_policy_server_without_prompt_logprobs_fails_preflight_quoting_it(tiny_causal_dir):
    scripted_server = ScriptedServer()  # answers a plain completion, without log-probabilities
    student = load_student(StudentConfig(model=str(tiny_causal_dir)))
    cfg = KDConfig(source="server", server={"base_url": scripted_server.url, "model": "m"}, on_policy={})
    with pytest.raises(
        ConfigError, match=r"cannot return prompt log-probabilities.*Two and two. The answer is"
    ):
        _term(cfg, student)
    scripted_server.close()
    assert scripted_server.requests[0]["body"]["echo"] is True

"""The chunked lm_head + cross-entropy (+ KD) against the plain path on full logits: same loss, same
gradients (hidden, weight, bias, every parameter of tiny real models), fp32 on CPU."""

from __future__ import annotations

import pytest
import torch

from stepdistill.kd.config import KDConfig
from stepdistill.kd.losses import TokenKD
from stepdistill.kd.term import KDTerm
from stepdistill.kd.topk import target_key
from stepdistill.kd.whitebox import precompute_topk
from stepdistill.training.batching import StepCounts, collate, encode_examples
from stepdistill.training.chunked_ce import chunked_target_loss, plain_target_loss
from stepdistill.training.config import StudentConfig, TrainConfig
from stepdistill.training.formatting import Pair
from stepdistill.training.models import load_student
from stepdistill.training.step import Objective, step_weights

N, H, V = 13, 8, 50  # 13 targets: chunk sizes 4 and 5 do not divide it
EXAMPLES = [("e1", "2 + 3", "5", "2 plus 3 makes 5."), ("e2", "7 - 4", "3", "Take 4 from 7 and 3 is left.")]


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=g)
    targets = torch.randint(0, V, (N,), generator=g)
    task_ids = torch.tensor([0] * 5 + [1] * 8)
    w = step_weights("step_by_step", 0.3, StepCounts(5, 8, 2, 2))
    on_token = torch.where(task_ids == 0, w.label, w.rationale)
    return hidden, targets, on_token


def _grads_of(fn, hidden, head):
    hidden = hidden.clone().requires_grad_()
    head.zero_grad()
    total, ce, kdv = fn(hidden)
    total.backward()
    params = {n: (p.grad.clone() if p.grad is not None else None) for n, p in head.named_parameters()}
    return total.detach(), ce, kdv, hidden.grad.clone(), params


def _assert_same(a, b):
    for x, y in zip(a[:4], b[:4]):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    assert a[4].keys() == b[4].keys()
    for name in a[4]:
        if a[4][name] is None:
            assert b[4][name] is None
        else:
            torch.testing.assert_close(a[4][name], b[4][name], atol=1e-5, rtol=1e-5)


def _dense_kd(seed: int = 1, loss: str = "forward_kl", temperature: float = 2.0) -> TokenKD:
    g = torch.Generator().manual_seed(seed)
    valid = torch.ones(N, dtype=torch.bool)
    return TokenKD(loss, temperature, 0.5, "rest", valid, teacher_logits=torch.randn(N, V, generator=g))


def _sparse_kd(mode: str, seed: int = 2, loss: str = "forward_kl", temperature: float = 1.0) -> TokenKD:
    g = torch.Generator().manual_seed(seed)
    k = 4
    ids = torch.stack([torch.randperm(V, generator=g)[:k] for _ in range(N)])
    ids[3, 2:] = -1  # a token with only two teacher entries
    lps = torch.log_softmax(torch.randn(N, k + 2, generator=g), -1)[:, :k]
    lps = torch.where(ids >= 0, lps, torch.full_like(lps, float("-inf")))
    valid = torch.ones(N, dtype=torch.bool)
    valid[7] = False  # no stored targets: placeholder entry, weight zero
    ids[7] = torch.tensor([0, -1, -1, -1])
    lps[7] = torch.tensor([0.0, float("-inf"), float("-inf"), float("-inf")])
    return TokenKD(loss, temperature, 0.5, mode, valid, ids=ids, logprobs=lps)


def _compare(head, kd=None, tweak=None, chunks=(1, 4, 5, 13, 64)):
    hidden, targets, on_token = _inputs()
    on_kd = torch.zeros(N) if kd is None else torch.where(kd.valid, 0.4 * on_token, 0.0)

    def plain(h):
        logits = head(h)
        logits = tweak(logits) if tweak is not None else logits
        return plain_target_loss(logits, targets, on_token, on_kd, kd)

    ref = _grads_of(plain, hidden, head)
    for chunk in chunks:

        def chunked(h, chunk=chunk):
            return chunked_target_loss(h, head, targets, on_token, on_kd, kd, tweak, chunk)

        got = _grads_of(chunked, hidden, head)
        _assert_same(got, ref)
    return ref


@pytest.mark.parametrize("bias", [False, True])
def test_chunked_ce_equals_plain_loss_and_gradients(bias):
    torch.manual_seed(0)
    ref = _compare(torch.nn.Linear(H, V, bias=bias))
    hidden, targets, on_token = _inputs()
    ce = torch.nn.functional.cross_entropy(torch.nn.Linear(H, V)(hidden) * 0, targets, reduction="none")
    assert ce.shape == ref[1].shape  # one CE per target token
    assert float(ref[0]) == pytest.approx(float((ref[1] * on_token).sum()), rel=1e-6)


def test_chunked_ce_with_frozen_weight_gives_no_weight_gradient():
    torch.manual_seed(0)
    head = torch.nn.Linear(H, V, bias=False)
    head.weight.requires_grad_(False)
    ref = _compare(head)
    assert ref[4]["weight"] is None and ref[3].abs().sum() > 0


def test_chunked_ce_with_output_bias_and_soft_cap():
    torch.manual_seed(0)
    final_bias = torch.randn(1, V)

    def tweak(logits):
        return torch.tanh((logits + final_bias[0]) / 3.0) * 3.0

    _compare(torch.nn.Linear(H, V, bias=False), tweak=tweak)


@pytest.mark.parametrize("loss,temperature", [("forward_kl", 2.0), ("reverse_kl", 1.0), ("jsd", 1.5)])
def test_chunked_dense_kd_equals_plain(loss, temperature):
    torch.manual_seed(0)
    ref = _compare(torch.nn.Linear(H, V, bias=False), kd=_dense_kd(loss=loss, temperature=temperature))
    assert ref[2].abs().sum() > 0


@pytest.mark.parametrize("mode", ["rest", "renormalize"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_chunked_sparse_kd_equals_plain(mode, temperature):
    torch.manual_seed(0)
    ref = _compare(torch.nn.Linear(H, V, bias=False), kd=_sparse_kd(mode, temperature=temperature))
    assert torch.isfinite(ref[2]).all() and ref[2].abs().sum() > 0


def test_chunked_ce_under_bf16_autocast_is_close_to_plain():
    torch.manual_seed(0)
    head = torch.nn.Linear(H, V, bias=False)
    hidden, targets, on_token = _inputs()
    on_kd = torch.zeros(N)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = _grads_of(lambda h: plain_target_loss(head(h), targets, on_token, on_kd), hidden, head)
        got = _grads_of(
            lambda h: chunked_target_loss(h, head, targets, on_token, on_kd, chunk=4), hidden, head
        )
    assert got[4]["weight"].dtype == torch.float32 and got[3].dtype == torch.float32
    torch.testing.assert_close(got[0], ref[0], atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(got[4]["weight"], ref[4]["weight"], atol=2e-2, rtol=5e-2)


# ---- through the Objective on tiny real students ----


def _batch(student, kind, tc):
    pairs = [[Pair("predict: " + q, a, 0), Pair("explain: " + q, r, 1)] for _, q, a, r in EXAMPLES]
    enc = encode_examples(student.tokenizer, pairs, tc, kind)
    batch = collate(enc, student.tokenizer.pad_token_id, kind)
    batch.keys = [target_key(i, t) for i, *_ in EXAMPLES for t in ("label", "rationale")]
    return batch


def _student(path, lora: bool = False):
    cfg = {"model": str(path)}
    if lora:
        cfg["lora"] = {"r": 4, "alpha": 8, "dropout": 0.0}
    student = load_student(StudentConfig(**cfg))
    student.model.eval()
    return student


def _run(model, kind, batch, tc, chunk, kd_term=None):
    objective = Objective(model, kind, kd_term, chunk)
    objective.zero_grad()
    weights = step_weights(tc.method, tc.alpha, _counts(batch))
    out = objective(batch, weights)
    out.total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def _counts(batch) -> StepCounts:
    """The counts of a step made of this one padded batch."""
    per_row = (batch.labels != -100).sum(-1)  # target tokens per row  # [rows]
    is_label = batch.task_ids == 0
    n_label_rows = int(is_label.sum())
    return StepCounts(
        int(per_row[is_label].sum()), int(per_row[~is_label].sum()), n_label_rows, batch.n_examples
    )


def _assert_objective_same(model, kind, batch, tc, kd_term=None, chunk=5):
    ref, ref_grads = _run(model, kind, batch, tc, None, kd_term)
    got, grads = _run(model, kind, batch, tc, chunk, kd_term)
    assert ref.sums.keys() == got.sums.keys()
    for key in ref.sums:
        torch.testing.assert_close(got.sums[key], ref.sums[key], atol=1e-5, rtol=1e-5)
    assert grads.keys() == ref_grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-5, rtol=1e-4)
    return ref, ref_grads


@pytest.mark.parametrize("method", ["step_by_step", "standard"])
@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_objective_chunked_equals_plain_on_tiny_students(request, kind, method):
    path = request.getfixturevalue("tiny_causal_dir" if kind == "causal" else "tiny_seq2seq_dir")
    student = _student(path)
    tc = TrainConfig(method=method, alpha=0.3)
    batch = _batch(student, kind, tc)
    if method == "standard":
        batch.task_ids = torch.zeros_like(batch.task_ids)
    _, grads = _assert_objective_same(student.model, kind, batch, tc)
    assert len(grads) == len(list(student.model.parameters()))  # every parameter took part
    if kind == "causal":  # tied: lm_head is the input embedding, whose gradient adds both uses
        assert student.model.get_output_embeddings().weight is student.model.get_input_embeddings().weight


def test_objective_chunked_equals_plain_with_lora(tiny_causal_dir):
    student = _student(tiny_causal_dir, lora=True)
    tc = TrainConfig(method="step_by_step", alpha=0.5)
    _, grads = _assert_objective_same(student.model, "causal", _batch(student, "causal", tc), tc)
    assert grads and all("lora" in name for name in grads)  # lm_head frozen: no weight gradient


def _kd_setup(tiny_causal_dir):
    teacher = _student(tiny_causal_dir).model
    student = _student(tiny_causal_dir)
    torch.manual_seed(0)
    with torch.no_grad():  # a student that differs from the teacher
        for p in student.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return teacher, student


def test_objective_chunked_equals_plain_with_whitebox_kd(tiny_causal_dir):
    teacher, student = _kd_setup(tiny_causal_dir)
    tc = TrainConfig(method="step_by_step", alpha=0.5)
    term = KDTerm(KDConfig(weight=0.3, temperature=2.0, tasks=["label", "rationale"]), teacher, "causal")
    ref, _ = _assert_objective_same(student.model, "causal", _batch(student, "causal", tc), tc, term)
    assert float(ref.sums["kd_label"]) > 0 and float(ref.sums["kd_rationale"]) > 0


@pytest.mark.parametrize("mode", ["rest", "renormalize"])
def test_objective_chunked_equals_plain_with_topk_kd(tiny_causal_dir, tmp_path, mode):
    from stepdistill.kd.topk import read_topk, write_topk

    teacher, student = _kd_setup(tiny_causal_dir)
    tc = TrainConfig(method="step_by_step", alpha=0.5)
    batch = _batch(student, "causal", tc)
    path = tmp_path / "train.topk.safetensors"
    precompute_topk(
        teacher, "causal", [(batch.keys, batch.input_ids, batch.attention_mask, batch.labels)], path, k=8
    )
    stored = read_topk(path)  # one row's targets stop before its eos: that token has none
    short = {k: stored.get(k) for k in batch.keys}
    short[batch.keys[1]] = short[batch.keys[1]][:-1]
    write_topk(tmp_path / "short.safetensors", short)
    cfg = KDConfig(source="topk_file", topk_file=str(tmp_path / "short.safetensors"),
                   tasks=["label", "rationale"], weight=0.5, sparse_mode=mode)  # fmt: skip
    term = KDTerm.from_config(cfg, student.tokenizer, student.model, "cpu")
    ref, _ = _assert_objective_same(student.model, "causal", batch, tc, term)
    assert torch.isfinite(ref.sums["loss"]) and float(ref.sums["kd_rationale"]) > 0


@pytest.mark.parametrize("chunk, chunked_calls", [(5, 1), (100_000, 0)])
def test_a_pass_with_no_more_targets_than_a_chunk_takes_the_plain_path(
    tiny_causal_dir, monkeypatch, chunk, chunked_calls
):
    import stepdistill.training.step as step_module

    calls = []
    real = step_module.chunked_target_loss
    monkeypatch.setattr(step_module, "chunked_target_loss", lambda *a, **k: calls.append(1) or real(*a, **k))
    student = _student(tiny_causal_dir)
    tc = TrainConfig(method="step_by_step")
    _run(student.model, "causal", _batch(student, "causal", tc), tc, chunk)
    assert len(calls) == chunked_calls

"""White-box teacher: logits at target tokens (causal and seq2seq), frozen teacher, top-k precompute."""

from __future__ import annotations

import torch

from stepdistill.kd.losses import dense_kd_loss, sparse_kd_loss
from stepdistill.kd.topk import read_topk
from stepdistill.kd.whitebox import load_teacher, precompute_topk, teacher_target_logits, topk_from_logits

IGNORE = -100


def _causal_batch(tok):
    rows = [("predict: 2 + 3 =", " 5"), ("predict: 10 - 4 =", " 6 apples")]
    ids, labels = [], []
    for src, tgt in rows:
        s = tok(src, add_special_tokens=False)["input_ids"]
        t = tok(tgt, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids.append(s + t)
        labels.append([IGNORE] * len(s) + t)
    width = max(len(r) for r in ids)
    pad = tok.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in ids])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids])
    lab = torch.tensor([r + [IGNORE] * (width - len(r)) for r in labels])
    return input_ids, mask, lab


def test_causal_teacher_logits_at_targets_match_full_forward(tiny_causal_dir, smol_tokenizer):
    teacher, kind = load_teacher(str(tiny_causal_dir))
    assert kind == "causal" and not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    ids, mask, labels = _causal_batch(smol_tokenizer)
    got = teacher_target_logits(teacher, ids, mask, labels, kind)
    n_targets = int((labels != IGNORE).sum())
    assert got.shape == (n_targets, len(smol_tokenizer)) and not got.requires_grad
    full = teacher(input_ids=ids, attention_mask=mask).logits
    # row 0, first target token: predicted from the position just before it
    first = int((labels[0] != IGNORE).nonzero()[0])
    assert torch.allclose(got[0], full[0, first - 1], atol=1e-5)
    # last target token of row 1 is the last element
    last = int((labels[1] != IGNORE).nonzero()[-1])
    assert torch.allclose(got[-1], full[1, last - 1], atol=1e-5)


def test_seq2seq_teacher_logits_match_labels_forward(tiny_seq2seq_dir, smol_tokenizer):
    teacher, kind = load_teacher(str(tiny_seq2seq_dir))
    assert kind == "seq2seq"
    ids = torch.tensor(smol_tokenizer(["predict: a b c", "predict: d"], padding=True)["input_ids"])
    mask = (ids != smol_tokenizer.pad_token_id).long()
    labels = torch.tensor([[5, 6, 7], [8, IGNORE, IGNORE]])
    got = teacher_target_logits(teacher, ids, mask, labels, kind)
    full = teacher(input_ids=ids, attention_mask=mask, labels=labels).logits
    assert got.shape[0] == 4
    assert torch.allclose(got, full[labels != IGNORE], atol=1e-5)


def test_gradients_reach_only_the_student(tiny_causal_dir, smol_tokenizer):
    from transformers import AutoModelForCausalLM

    teacher, kind = load_teacher(str(tiny_causal_dir))
    student = AutoModelForCausalLM.from_pretrained(tiny_causal_dir)
    with torch.no_grad():  # make the student differ from the teacher
        for p in student.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ids, mask, labels = _causal_batch(smol_tokenizer)
    t_logits = teacher_target_logits(teacher, ids, mask, labels, kind)
    s_logits = student(input_ids=ids, attention_mask=mask).logits[:, :-1][labels[:, 1:] != IGNORE]
    loss = dense_kd_loss(s_logits, t_logits, temperature=2.0)
    sp = topk_from_logits(t_logits, 5)
    loss = loss + sparse_kd_loss(s_logits, sp.ids, sp.logprobs, loss="jsd")
    loss.backward()
    assert loss.item() > 0
    assert all(p.grad is None for p in teacher.parameters())
    grads = {n: p.grad for n, p in student.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["model.layers.0.self_attn.q_proj.weight"].abs().sum() > 0


def test_precompute_topk_round_trip(tiny_causal_dir, smol_tokenizer, tmp_path):
    teacher, kind = load_teacher(str(tiny_causal_dir))
    ids, mask, labels = _causal_batch(smol_tokenizer)
    path = tmp_path / "train.topk.safetensors"
    n = precompute_topk(teacher, kind, [(["a\tlabel", "b\tlabel"], ids, mask, labels)], path, k=4)
    assert n == 2
    f = read_topk(path)
    expected = topk_from_logits(teacher_target_logits(teacher, ids, mask, labels, kind), 4)
    n0 = int((labels[0, 1:] != IGNORE).sum())
    a, b = f.get("a\tlabel"), f.get("b\tlabel")
    assert len(a) == n0 and len(a) + len(b) == expected.ids.shape[0]
    assert torch.equal(torch.cat([a.ids, b.ids]), expected.ids)
    assert torch.allclose(torch.cat([a.logprobs, b.logprobs]), expected.logprobs, atol=2e-2)
    assert f.meta["kind"] == "causal" and f.k == 4

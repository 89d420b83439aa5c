"""KD losses against hand-computed values and a torch.nn.functional.kl_div reference."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from stepdistill.kd.losses import KDMonitor, dense_kd_loss, divergence, sparse_kd_loss

P = [0.5, 0.5]  # teacher
Q = [0.25, 0.75]  # student


def _logits(probs):
    return torch.tensor([probs]).log()


def test_forward_reverse_jsd_hand_computed():
    t, s = _logits(P), _logits(Q)
    fwd = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    rev = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    m = [0.375, 0.625]
    jsd = 0.5 * (0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])) + 0.5 * (
        0.25 * math.log(0.25 / m[0]) + 0.75 * math.log(0.75 / m[1])
    )
    assert dense_kd_loss(s, t, loss="forward_kl").item() == pytest.approx(fwd, abs=1e-6)
    assert dense_kd_loss(s, t, loss="reverse_kl").item() == pytest.approx(rev, abs=1e-6)
    assert dense_kd_loss(s, t, loss="jsd", beta=0.5).item() == pytest.approx(jsd, abs=1e-6)
    assert fwd == pytest.approx(0.143841, abs=1e-6) and jsd == pytest.approx(0.033822, abs=1e-6)


def _kl_div_ref(student, teacher, mask, tau):
    logq = F.log_softmax(student / tau, -1)
    logp = F.log_softmax(teacher / tau, -1)
    per = F.kl_div(logq, logp, log_target=True, reduction="none").sum(-1)  # KL(p || q)
    return (per * mask).sum() / mask.sum() * tau**2, logp, logq


@pytest.mark.parametrize("tau", [1.0, 2.0, 0.5])
def test_dense_matches_kl_div_reference_with_mask_and_tau_squared(tau):
    g = torch.Generator().manual_seed(0)
    student = torch.randn(2, 5, 11, generator=g)
    teacher = torch.randn(2, 5, 11, generator=g) * 3
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    ref, logp, logq = _kl_div_ref(student, teacher, mask.float(), tau)
    got = dense_kd_loss(student, teacher, mask, loss="forward_kl", temperature=tau)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    # reverse KL is KL(q || p): kl_div with the roles swapped
    rev = F.kl_div(logp, logq, log_target=True, reduction="none").sum(-1)
    rev_ref = (rev * mask).sum() / mask.sum() * tau**2
    got_rev = dense_kd_loss(student, teacher, mask, loss="reverse_kl", temperature=tau)
    assert got_rev.item() == pytest.approx(rev_ref.item(), rel=1e-5)


def test_tau_squared_scaling_explicit():
    s, t = _logits(Q), torch.tensor([[2.0, -1.0]])
    tau = 3.0
    p = torch.softmax(t / tau, -1)[0]
    q = torch.softmax(s / tau, -1)[0]
    kl = sum(float(p[i] * (p[i] / q[i]).log()) for i in range(2))
    assert dense_kd_loss(s, t, temperature=tau).item() == pytest.approx(9.0 * kl, rel=1e-5)


def test_jsd_limits_approach_forward_and_reverse_kl():
    g = torch.Generator().manual_seed(1)
    logp = F.log_softmax(torch.randn(4, 7, generator=g), -1)
    logq = F.log_softmax(torch.randn(4, 7, generator=g), -1)
    eps = 1e-4
    fwd = divergence(logp.double(), logq.double(), "forward_kl")
    rev = divergence(logp.double(), logq.double(), "reverse_kl")
    near0 = divergence(logp.double(), logq.double(), "jsd", beta=eps) / eps
    near1 = divergence(logp.double(), logq.double(), "jsd", beta=1 - eps) / eps
    assert torch.allclose(near0, fwd, rtol=1e-3)
    assert torch.allclose(near1, rev, rtol=1e-3)
    # GKD's convention at the endpoints: beta 0 is forward KL, beta 1 reverse KL (not a zero loss).
    assert torch.equal(divergence(logp, logq, "jsd", beta=0.0), divergence(logp, logq, "forward_kl"))
    assert torch.equal(divergence(logp, logq, "jsd", beta=1.0), divergence(logp, logq, "reverse_kl"))


def test_sparse_rest_and_renormalize_hand_computed():
    student = _logits([0.1, 0.2, 0.3, 0.4])
    ids = torch.tensor([[3, 2, -1]])  # third entry is padding
    lp = torch.tensor([[0.6, 0.3, 1.0]]).log()
    rest = 0.6 * math.log(0.6 / 0.4) + 0.3 * math.log(0.3 / 0.3) + 0.1 * math.log(0.1 / 0.3)
    renorm = (2 / 3) * math.log((2 / 3) / (4 / 7)) + (1 / 3) * math.log((1 / 3) / (3 / 7))
    assert sparse_kd_loss(student, ids, lp, mode="rest").item() == pytest.approx(rest, abs=1e-6)
    assert sparse_kd_loss(student, ids, lp, mode="renormalize").item() == pytest.approx(renorm, abs=1e-6)


def test_sparse_with_full_vocab_equals_dense():
    g = torch.Generator().manual_seed(2)
    student = torch.randn(3, 6, generator=g)
    teacher = torch.randn(3, 6, generator=g)
    lp, ids = F.log_softmax(teacher, -1).sort(-1, descending=True)
    # rest mode tempers the (here empty) rest bucket as one outcome, so compare it at T = 1
    for loss in ("forward_kl", "reverse_kl", "jsd"):
        for mode, tau in (("rest", 1.0), ("renormalize", 2.0)):
            dense = dense_kd_loss(student, teacher, loss=loss, temperature=tau)
            sparse = sparse_kd_loss(student, ids, lp, loss=loss, temperature=tau, mode=mode)
            assert sparse.item() == pytest.approx(dense.item(), abs=1e-4), (loss, mode)


def test_gradients_finite_with_padding_and_only_student_gets_grad():
    student = torch.randn(2, 3, 8, requires_grad=True)
    teacher = torch.randn(2, 3, 8, requires_grad=True)
    mask = torch.tensor([[1, 0, 1], [0, 0, 1]], dtype=torch.bool)
    for loss in ("forward_kl", "reverse_kl", "jsd"):
        dense_kd_loss(student, teacher, mask, loss=loss).backward()
    assert teacher.grad is None
    assert torch.isfinite(student.grad).all() and student.grad[0, 1].abs().sum() == 0
    ids = torch.tensor([[[1, 2, -1]] * 3] * 2)
    lp = torch.tensor([[[-0.5, -1.5, float("-inf")]] * 3] * 2)
    student.grad = None
    for loss in ("forward_kl", "reverse_kl", "jsd"):
        for mode in ("rest", "renormalize"):
            sparse_kd_loss(student, ids, lp, mask, loss=loss, mode=mode).backward()
    assert torch.isfinite(student.grad).all() and student.grad[0, 0].abs().sum() > 0


def test_no_targets_gives_zero_and_bad_shapes_raise():
    s = torch.randn(2, 4, requires_grad=True)
    out = dense_kd_loss(s, torch.randn(2, 4), torch.zeros(2, dtype=torch.bool))
    assert out.item() == 0.0 and out.requires_grad
    with pytest.raises(ValueError, match="do not match"):
        sparse_kd_loss(s, torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="unknown KD loss"):
        dense_kd_loss(s, s, loss="kl")


def test_monitor_warns_once_when_the_weighted_kd_term_is_negligible(caplog):
    mon = KDMonitor(warn_ratio=0.01)
    small = {"ce_weighted": 1.5, "kd_weighted": 0.00025}  # what the trainer logs: (1 - w) CE, w KD
    with caplog.at_level(logging.WARNING, logger="stepdistill.kd.losses"):
        mon.observe(small)
        mon.observe(small)
    assert len([r for r in caplog.records if "KD term" in r.message]) == 1 and len(mon.history) == 2
    mon2 = KDMonitor()
    mon2.observe({"ce_weighted": 1.0, "kd_weighted": 0.25})
    assert not mon2.warned and len(mon2.history) == 1

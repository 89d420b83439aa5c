"""Soft-target distillation losses: pure torch, per target token, averaged over target tokens.

Notation: p = teacher distribution, q = student distribution, both softened by temperature T.

    forward_kl  KL(p || q) * T^2     mass-covering; the classic soft-target KD
    reverse_kl  KL(q || p) * T^2     mode-seeking
    jsd         (beta * KL(p || m) + (1 - beta) * KL(q || m)) * T^2,  m = beta * p + (1 - beta) * q
                JSD / beta -> forward KL as beta -> 0; JSD / (1 - beta) -> reverse KL as beta -> 1,
                so, as in GKD (Agarwal et al. 2024) and TRL, beta = 0 IS forward KL and beta = 1
                reverse KL (the plain JSD would be identically 0 there).

The T^2 factor keeps gradient magnitudes comparable across temperatures (soft-target gradients scale
as 1/T^2). Teacher targets come dense (logits over the whole vocabulary, [N, V]) or sparse (top-k ids
and log-probs, [N, K], id -1 marks padding). Sparse targets have two modes:

    renormalize  teacher and student are both renormalised over the teacher's top-k ids;
    rest         the mass outside the top-k is kept as one extra "other" bucket on both sides
                 (teacher: 1 - sum of its top-k probs; student: 1 - sum of its probs on those ids).

With sparse targets the temperature is applied to the k (+1) bucket distribution, which is exact
for T = 1 and for `renormalize` (a softmax over a subset commutes with tempering), and treats the
rest bucket as a single outcome otherwise.

Shapes: logits [..., V] with a boolean mask [...] selecting target tokens; the loss is the mean over
selected tokens (0 when none are selected, so a batch without KD targets contributes nothing).
Only the selected rows enter the arithmetic, so padding rows cannot produce NaN gradients.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

LOSSES = ("forward_kl", "reverse_kl", "jsd")
SPARSE_MODES = ("rest", "renormalize")


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dim from log-probs; terms with p = 0 (log-prob -inf) are 0."""
    support = logp > float("-inf")
    # Replace -inf by 0 before the arithmetic so that backward never sees 0 * inf (NaN gradients).
    logp = torch.where(support, logp, torch.zeros_like(logp))
    logq = torch.where(support, logq, torch.zeros_like(logq))
    return torch.where(support, logp.exp() * (logp - logq), torch.zeros_like(logp)).sum(-1)


def divergence(logp: torch.Tensor, logq: torch.Tensor, loss: str, beta: float = 0.5) -> torch.Tensor:
    """Per-row divergence between teacher log-probs `logp` and student log-probs `logq` ([..., C])."""
    if loss == "forward_kl":
        return _kl(logp, logq)
    if loss == "reverse_kl":
        return _kl(logq, logp)
    if loss == "jsd":
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"jsd beta must be in [0, 1], got {beta}")
        if beta == 0.0:  # GKD's endpoints: the limits of JSD / beta and JSD / (1 - beta)
            return _kl(logp, logq)
        if beta == 1.0:
            return _kl(logq, logp)
        # Outcomes neither side supports (padding) would make logaddexp(-inf, -inf) return NaN
        # gradients; give them log-prob 0 on both sides there, where they contribute exactly 0.
        dead = (logp == float("-inf")) & (logq == float("-inf"))
        logp = logp.masked_fill(dead, 0.0)
        logq = logq.masked_fill(dead, 0.0)
        # log m computed in log space so that tiny probabilities do not underflow.
        logm = torch.logaddexp(logp + math.log(beta), logq + math.log(1.0 - beta))
        return beta * _kl(logp, logm) + (1.0 - beta) * _kl(logq, logm)
    raise ValueError(f"unknown KD loss '{loss}' (allowed: {', '.join(LOSSES)})")


def _select(mask: torch.Tensor | None, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Keep only target rows ([..., X] -> [N, X]) so padding never enters the arithmetic."""
    if mask is None:
        return [t.reshape(-1, t.shape[-1]) for t in tensors]
    if mask.shape != tensors[0].shape[:-1]:
        raise ValueError(f"mask {tuple(mask.shape)} does not match logits {tuple(tensors[0].shape)}")
    return [t[mask.bool()] for t in tensors]


def _mean(per_token: torch.Tensor) -> torch.Tensor:
    # No target tokens: a zero that still carries the graph, so callers can add it unconditionally.
    return per_token.mean() if per_token.numel() else per_token.sum()


def dense_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    loss: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
) -> torch.Tensor:
    """KD loss against dense teacher logits. student/teacher [..., V], mask [...] (True = target)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} != teacher {tuple(teacher_logits.shape)}"
        )
    student_logits, teacher_logits = _select(mask, student_logits, teacher_logits)
    return _mean(dense_kd_per_token(student_logits, teacher_logits, loss, temperature, beta))


def dense_kd_per_token(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    loss: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
) -> torch.Tensor:
    """KD per token against dense teacher logits: student/teacher [N, V] -> [N] float32."""
    logq = F.log_softmax(student_logits.float() / temperature, dim=-1)
    # The teacher is a fixed target: never let gradients reach it.
    logp = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    return divergence(logp, logq, loss, beta) * temperature**2


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, stable at both ends; x is clamped just below 0."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def sparse_buckets(
    student_logits: torch.Tensor, ids: torch.Tensor, logprobs: torch.Tensor, mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student log-probs over the top-k buckets (+ the rest bucket in mode 'rest').

    student_logits [..., V]; ids [..., K] (int, -1 = padding); logprobs [..., K] (teacher, T = 1).
    Returns (logp, logq) of shape [..., K] ('renormalize') or [..., K + 1] ('rest'); padded entries
    get log-prob -inf on both sides.
    """
    if mode not in SPARSE_MODES:
        raise ValueError(f"unknown sparse mode '{mode}' (allowed: {', '.join(SPARSE_MODES)})")
    valid = ids >= 0
    neg_inf = torch.tensor(float("-inf"), device=student_logits.device)
    logq_full = F.log_softmax(student_logits.float(), dim=-1)
    logq = torch.where(valid, logq_full.gather(-1, ids.clamp(min=0).long()), neg_inf)
    logp = torch.where(valid, logprobs.detach().float(), neg_inf)
    if mode == "renormalize":
        return logp - logp.logsumexp(-1, keepdim=True), logq - logq.logsumexp(-1, keepdim=True)
    rest_p = _log1mexp(logp.logsumexp(-1, keepdim=True))
    rest_q = _log1mexp(logq.logsumexp(-1, keepdim=True))
    logp = torch.cat([logp, rest_p], dim=-1)
    logq = torch.cat([logq, rest_q], dim=-1)
    # Float16 storage can make the top-k sum exceed 1 by rounding; renormalise the buckets.
    return logp - logp.logsumexp(-1, keepdim=True), logq - logq.logsumexp(-1, keepdim=True)


def sparse_kd_loss(
    student_logits: torch.Tensor,
    ids: torch.Tensor,
    logprobs: torch.Tensor,
    mask: torch.Tensor | None = None,
    loss: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    mode: str = "rest",
) -> torch.Tensor:
    """KD loss against sparse top-k teacher targets (see the module docstring for the two modes)."""
    if ids.shape != logprobs.shape or ids.shape[:-1] != student_logits.shape[:-1]:
        raise ValueError(
            f"sparse targets ids {tuple(ids.shape)} / logprobs {tuple(logprobs.shape)} do not match "
            f"student logits {tuple(student_logits.shape)}"
        )
    student_logits, ids, logprobs = _select(mask, student_logits, ids, logprobs)
    if not bool((ids >= 0).any(-1).all()):
        raise ValueError("a target token has no teacher entries (all top-k ids are padding)")
    return _mean(sparse_kd_per_token(student_logits, ids, logprobs, loss, temperature, beta, mode))


def sparse_kd_per_token(
    student_logits: torch.Tensor,
    ids: torch.Tensor,
    logprobs: torch.Tensor,
    loss: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    mode: str = "rest",
) -> torch.Tensor:
    """KD per token against sparse top-k targets: logits [N, V], ids/logprobs [N, K] -> [N] float32.
    Every token needs at least one teacher entry (id >= 0)."""
    logp, logq = sparse_buckets(student_logits, ids, logprobs, mode)
    if temperature != 1.0:
        logp = F.log_softmax(logp / temperature, dim=-1)
        logq = F.log_softmax(logq / temperature, dim=-1)
    return divergence(logp, logq, loss, beta) * temperature**2


@dataclass
class TokenKD:
    """Teacher targets per target token (row i belongs to target i) and the divergence to use.

    Dense: `teacher_logits` [n, vocab]. Sparse: `ids`, `logprobs` [n, K] (id -1 = padding); a token
    without teacher entries must carry at least one placeholder entry and `valid` False, so that its
    term is finite; its weight is zero."""

    loss: str
    temperature: float
    beta: float
    mode: str  # sparse targets: "rest" or "renormalize"
    valid: torch.Tensor  # [n] bool: the token has teacher targets
    teacher_logits: torch.Tensor | None = None
    ids: torch.Tensor | None = None
    logprobs: torch.Tensor | None = None

    def per_token(self, logits: torch.Tensor, rows: slice) -> torch.Tensor:
        """KD of each token in `rows`; logits [c, vocab] float32 -> [c]."""
        if self.teacher_logits is not None:
            teacher = self.teacher_logits[rows]
            return dense_kd_per_token(logits, teacher, self.loss, self.temperature, self.beta)
        return sparse_kd_per_token(
            logits, self.ids[rows], self.logprobs[rows], self.loss, self.temperature, self.beta, self.mode
        )


@dataclass
class KDMonitor:
    """Remembers term magnitudes and warns once when the weighted KD term is negligible next to CE.

    Users of other tools report KD terms that are silently useless (a missing T^2, a tiny weight,
    targets on the wrong positions); a one-time warning makes that visible.
    """

    warn_ratio: float = 0.01
    warned: bool = False
    history: list[dict[str, float]] = field(default_factory=list)

    def observe(self, parts: dict[str, float]) -> None:
        self.history.append(parts)
        ce, kd = parts["ce_weighted"], parts["kd_weighted"]
        if not self.warned and ce > 0 and kd > 0 and kd < self.warn_ratio * ce:
            self.warned = True
            log.warning(
                "KD term (weighted %.3g) is under %g of the CE term (weighted %.3g): the soft targets "
                "barely affect training; check kd.weight, kd.temperature and the target alignment",
                kd,
                self.warn_ratio,
                ce,
            )

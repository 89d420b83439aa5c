"""The vocabulary projection and the per-token losses at the target tokens, chunk by chunk.

The loss of a pass is a weighted sum over its n target tokens,

    total = sum_i ce_weight[i] * CE_i + sum_i kd_weight[i] * KD_i

where CE_i is the cross-entropy of the student's logits (hidden_i @ W^T, plus the model's output
tweaks) against target i and KD_i the soft-target term against the teacher's targets for token i.
Both weight vectors are known before the loss (the step's normalisers, alpha and kd.weight), so the
gradient of the total with respect to each chunk's logits is known as soon as that chunk is seen.

`chunked_target_loss` walks the target rows `chunk` at a time: per chunk it computes the logits
(in the autocast dtype, like the plain lm_head; the softmax and losses in float32), the per-token
CE and KD, the gradient w.r.t. the chunk's logits, and from it the chunk's gradient w.r.t. the
hidden rows and its share of the lm_head weight (and bias) gradient, accumulated in float32. Only a
[chunk, vocab] block of logits exists at any time, never the [n, vocab] float32 tensor; the price
is a float32 buffer the size of the lm_head weight held from forward to backward (none when the
weight is frozen, as with LoRA). The gradients are computed in forward, so backward only scales them
by the incoming gradient (the loss is backpropagated once, as in training).

KD in chunks: dense teacher logits ([n, vocab], one row per target token) or sparse top-k targets
([n, K] ids and log-probs) are sliced per chunk; the teacher's own dense logits are still a full
[n, vocab] tensor (the teacher computes them), but no student-side [n, vocab] tensor or its graph is
kept. `plain_target_loss` is the same sum on full logits: the path training takes for a pass with
at most `loss_chunk_tokens` target tokens (most passes at the default 1024), with chunking off, or
when the output layer is not a plain nn.Linear (e.g. a peft-wrapped lm_head).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

Tweak = Callable[[torch.Tensor], torch.Tensor]  # float32 logits -> float32 logits (bias, soft cap)


class TokenTargets(Protocol):
    """Teacher targets per target token (stepdistill.kd.losses.TokenKD): `valid` [n] bool, and
    `per_token(logits [c, vocab] float32, rows: slice) -> [c]`, the KD of the tokens in `rows`."""

    valid: torch.Tensor

    def per_token(self, logits: torch.Tensor, rows: slice) -> torch.Tensor: ...


def _token_terms(
    logits: torch.Tensor, targets: torch.Tensor, kd: TokenTargets | None, rows: slice
) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE, KD) per token of float32 logits [c, vocab]; KD is zeros without a kd term."""
    ce = F.cross_entropy(logits, targets, reduction="none")
    return ce, (kd.per_token(logits, rows) if kd is not None else torch.zeros_like(ce))


def plain_target_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ce_weight: torch.Tensor,
    kd_weight: torch.Tensor,
    kd: TokenTargets | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, CE [n], KD [n]) on full logits [n, vocab]; CE and KD are detached."""
    ce, kdv = _token_terms(logits.float(), targets, kd, slice(None))
    total = (ce * ce_weight).sum() + (kdv * kd_weight).sum()
    return total, ce.detach(), kdv.detach()


class _ChunkedLinearLoss(torch.autograd.Function):
    """total = sum_i a_i CE_i + b_i KD_i of logits = tweak(hidden @ W^T + bias), chunk by chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, ce_weight, kd_weight, kd, tweak, chunk, dtype, want_grad):
        n = hidden.shape[0]
        need_h, need_w, need_b = (want_grad and need for need in ctx.needs_input_grad[:3])
        grad_h = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        ce = torch.zeros(n, dtype=torch.float32, device=hidden.device)
        kdv = torch.zeros_like(ce)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        w = weight.to(dtype)
        for start in range(0, n, chunk):
            rows = slice(start, min(n, start + chunk))
            h = hidden[rows].to(dtype)  # [c, hidden]
            raw = (h @ w.T).float()  # [c, vocab]
            if bias is not None:
                raw = raw + bias.float()
            with torch.enable_grad():
                raw.requires_grad_(need_h or need_w or need_b)
                logits = tweak(raw) if tweak is not None else raw
                ce_c, kd_c = _token_terms(logits, targets[rows], kd, rows)
                part = (ce_c * ce_weight[rows]).sum() + (kd_c * kd_weight[rows]).sum()
                if raw.requires_grad:
                    (g,) = torch.autograd.grad(part, raw)  # d part / d logits  # [c, vocab]
                    g = g.to(dtype)
                    if need_h:
                        grad_h[rows] = (g @ w).float()
                    if need_w:
                        grad_w += (g.T @ h).float()
                    if need_b:
                        grad_b += g.float().sum(0)
            ce[rows], kdv[rows] = ce_c.detach(), kd_c.detach()
            total += part.detach()
        ctx.save_for_backward(*(t for t in (grad_h, grad_w, grad_b) if t is not None))
        ctx.present = (need_h, need_w, need_b)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        ctx.mark_non_differentiable(ce, kdv)
        return total, ce, kdv

    @staticmethod
    def backward(ctx, grad_total, _grad_ce, _grad_kd):
        saved = iter(ctx.saved_tensors)
        grads = []
        for present, dtype in zip(ctx.present, ctx.dtypes):
            grads.append((next(saved) * grad_total).to(dtype) if present else None)
        return (*grads, None, None, None, None, None, None, None, None)


def chunked_target_loss(
    hidden: torch.Tensor,
    head: torch.nn.Linear,
    targets: torch.Tensor,
    ce_weight: torch.Tensor,
    kd_weight: torch.Tensor,
    kd: TokenTargets | None = None,
    tweak: Tweak | None = None,
    chunk: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, CE [n], KD [n]) of `head` on hidden rows [n, hidden] without [n, vocab] logits.

    The matmul runs in the autocast dtype when autocast is on (as `head(hidden)` would), else in the
    promoted dtype of hidden and weight; losses and accumulated gradients are float32. A frozen
    weight (requires_grad False) gets no gradient and no buffer."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
    else:
        dtype = torch.promote_types(hidden.dtype, head.weight.dtype)
    want_grad = torch.is_grad_enabled()
    with torch.autocast(device, enabled=False):
        return _ChunkedLinearLoss.apply(
            hidden, head.weight, head.bias, targets, ce_weight.float(), kd_weight.float(), kd, tweak,
            max(1, chunk), dtype, want_grad,
        )  # fmt: skip

"""Loss arithmetic on per-token losses (pure; no model here).

Distilling step-by-step trains on a label task and a rationale task at once:

    L = alpha * L_label + (1 - alpha) * L_rationale

where each term is the mean cross-entropy over the target tokens of its own rows. This equals the
reference implementation, which runs two separate forward passes (label batch, rationale batch) and
takes the token mean of each. All other methods use the plain token mean over every target token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stepdistill.training.formatting import LABEL_TASK, RATIONALE_TASK


def token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per target token. logits [n, vocab] float, targets [n] -> [n] float32."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


def task_mean(token_loss: torch.Tensor, token_task: torch.Tensor, task_id: int) -> tuple[torch.Tensor, int]:
    """Mean loss over the tokens of one task and their count; zero (keeping the graph) if none."""
    mask = token_task == task_id
    n = int(mask.sum())
    if n == 0:
        return token_loss.sum() * 0.0, 0
    return token_loss[mask].sum() / n, n


def mix(
    method: str, alpha: float, token_loss: torch.Tensor, token_task: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    """(total, label, rationale, n_label_tokens, n_rationale_tokens) for a batch's target tokens."""
    label, n_label = task_mean(token_loss, token_task, LABEL_TASK)
    rationale, n_rat = task_mean(token_loss, token_task, RATIONALE_TASK)
    if method == "step_by_step":
        total = alpha * label + (1.0 - alpha) * rationale
    else:
        total = token_loss.mean() if token_loss.numel() else token_loss.sum() * 0.0
    return total, label, rationale, n_label, n_rat


def token_weights(
    method: str, alpha: float, token_task: torch.Tensor, n_label: int, n_rationale: int
) -> torch.Tensor:
    """Per-token weights w with sum(w * token_loss) == mix(...)[0] over a whole step, for the tokens
    of any part of it: the counts are those of the whole step, so the parts' sums add up to the total.

    step_by_step: alpha / n_label on label tokens, (1 - alpha) / n_rationale on rationale tokens;
    other methods: 1 / (n_label + n_rationale) on every token.
    """
    if method != "step_by_step":
        return torch.full(token_task.shape, 1.0 / max(1, n_label + n_rationale), device=token_task.device)
    on_label = alpha / n_label if n_label else 0.0
    on_rationale = (1.0 - alpha) / n_rationale if n_rationale else 0.0
    return torch.where(token_task == LABEL_TASK, on_label, on_rationale).float()

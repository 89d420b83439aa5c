"""Per-token cross-entropy (pure; no model here).

Distilling step-by-step trains on a label task and a rationale task at once:

    L = alpha * L_label + (1 - alpha) * L_rationale

where each term is the mean cross-entropy over the target tokens of its own rows. This equals the
reference implementation, which runs two separate forward passes (label batch, rationale batch) and
takes the token mean of each. All other methods use the plain token mean over every target token.
The means are taken over the whole optimizer step; training/step.py weighs each token accordingly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per target token. logits [n, vocab] float, targets [n] -> [n] float32."""
    return F.cross_entropy(logits.float(), targets, reduction="none")

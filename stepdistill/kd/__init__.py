"""Soft-target distillation: KD losses, teacher probabilities (white-box or stored top-k), preflight."""

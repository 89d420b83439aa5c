"""When to evaluate, when to stop, and the label weight alpha at each step (pure functions).

Training to convergence: with `train.eval_schedule: geometric` validation runs at steps
eval_every, eval_every * g, eval_every * g^2, ... (g = `train.eval_growth`, rounded, always the last
step too), dense early when accuracy moves fast and sparse later when each evaluation costs more than
it tells. With `train.patience: P` a run stops after P evaluations in a row without a new best
validation accuracy; `train.max_steps` (or `epochs`) stays the budget that caps it.

The label weight: loss = alpha * L_label + (1 - alpha) * L_rationale. `alpha_schedule: linear`
moves alpha from `train.alpha` at the first step to `train.alpha_end` at the last, so a step_by_step
student can learn from the rationales early and give the label task the last word.
"""

from __future__ import annotations

from stepdistill.training.config import TrainConfig


def alpha_at(tc: TrainConfig, step: int, total_steps: int) -> float:
    """alpha for optimizer step `step` (0-based) of `total_steps`."""
    if tc.alpha_schedule == "constant" or total_steps <= 1:
        return tc.alpha
    frac = min(max(step, 0), total_steps - 1) / (total_steps - 1)
    return tc.alpha + (tc.alpha_end - tc.alpha) * frac


def eval_steps(tc: TrainConfig, total_steps: int) -> list[int]:
    """The 1-based steps after which validation runs (the last step always)."""
    if tc.eval_schedule == "every":
        steps = list(range(tc.eval_every, total_steps + 1, tc.eval_every))
    else:
        steps, at = [], float(tc.eval_every)
        while round(at) <= total_steps:
            if not steps or round(at) > steps[-1]:
                steps.append(round(at))
            at *= tc.eval_growth
    if not steps or steps[-1] != total_steps:
        steps.append(total_steps)
    return steps


def patience_exhausted(tc: TrainConfig, evals_since_best: int) -> bool:
    """Whether `train.patience` evaluations in a row have passed without a new best checkpoint."""
    return tc.patience is not None and evals_since_best >= tc.patience

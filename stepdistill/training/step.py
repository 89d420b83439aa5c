"""The training objective of one step, written out in one place.

Memory and speed: the vocabulary projection (lm_head) runs only on the hidden states of target
tokens, never on the full [rows, seq, vocab] tensor. For a causal student with a 400-token prompt and
a 5-token label that is ~80x less lm_head work and memory than `model(..., labels=...)`.

`forward_backward` runs a step pass by pass (label rows, then rationale rows, each padded to its
own length) and backpropagates each pass before the next, so peak activation memory is that of the
largest pass, not of the whole step. Each pass's loss is weighted by the token counts of the whole
step, so the gradients add up to those of `compute_loss` on all rows at once.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch

from stepdistill.training.batching import IGNORE, Batch, Step
from stepdistill.training.config import TrainConfig
from stepdistill.training.formatting import LABEL_TASK, RATIONALE_TASK
from stepdistill.training.losses import mix, token_losses, token_weights


@dataclass
class TargetLogits:
    """Student logits at the positions that predict target tokens, flattened over the batch."""

    logits: torch.Tensor  # [n_targets, vocab]
    targets: torch.Tensor  # [n_targets] token ids to predict
    rows: torch.Tensor  # [n_targets] batch row of each target token
    positions: torch.Tensor  # [n_targets] index of the token within its row's labels
    task_ids: torch.Tensor  # [n_targets] 0 label token, 1 rationale token


@dataclass
class LossParts:
    total: torch.Tensor  # what is backpropagated
    label: torch.Tensor  # token-mean loss over label rows
    rationale: torch.Tensor  # token-mean loss over rationale rows (0 when there are none)
    n_label_tokens: int
    n_rationale_tokens: int
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # every term, detached, for logging
    at_targets: TargetLogits | None = None  # kept when compute_loss(keep_logits=True)


def _project(model, hidden: torch.Tensor) -> torch.Tensor:
    """lm_head on selected hidden rows [n, hidden] -> [n, vocab], with the model's own output tweaks."""
    logits = model.get_output_embeddings()(hidden)
    bias = getattr(model, "final_logits_bias", None)  # BART-style output bias
    if bias is not None:
        logits = logits + bias[0]
    cap = getattr(model.config, "final_logit_softcapping", None)  # Gemma-2-style soft capping
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _causal_targets(model, batch: Batch) -> TargetLogits:
    hidden = model.get_decoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask)[0]
    # Position t predicts token t+1: shift labels left against the hidden states.
    labels = batch.labels[:, 1:]  # [rows, seq-1]
    rows, pos = (labels != IGNORE).nonzero(as_tuple=True)
    logits = _project(model, hidden[:, :-1][rows, pos])  # [n_targets, vocab]
    return TargetLogits(logits, labels[rows, pos], rows, pos + 1, batch.task_ids[rows])


def _seq2seq_targets(model, batch: Batch) -> TargetLogits:
    encoded = model.get_encoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask)[0]
    decoder_ids = model.prepare_decoder_input_ids_from_labels(labels=batch.labels)
    hidden = model.get_decoder()(
        input_ids=decoder_ids, encoder_hidden_states=encoded, encoder_attention_mask=batch.attention_mask
    )[0]
    # Original T5 (tied embeddings) rescales decoder outputs before lm_head; T5 v1.1 does not.
    scale = getattr(model.config, "scale_decoder_outputs", None)
    if scale is None:
        scale = getattr(model.config, "tie_word_embeddings", False) and model.config.model_type in (
            "t5",
            "mt5",
        )
    if scale:
        hidden = hidden * (model.config.d_model**-0.5)
    rows, pos = (batch.labels != IGNORE).nonzero(as_tuple=True)
    logits = _project(model, hidden[rows, pos])  # [n_targets, vocab]
    return TargetLogits(logits, batch.labels[rows, pos], rows, pos, batch.task_ids[rows])


def target_logits(model, batch: Batch, kind: str) -> TargetLogits:
    """Student logits at every target token of the batch (one forward pass for all rows)."""
    if kind == "causal":
        return _causal_targets(model, batch)
    return _seq2seq_targets(model, batch)


def compute_loss(
    model, batch: Batch, kind: str, cfg: TrainConfig, keep_logits: bool = False, kd_term=None
) -> LossParts:
    """The loss of one batch. `model` is the plain transformers model (LoRA layers injected);
    `kind` is "causal" or "seq2seq"; `kd_term` a stepdistill.kd.term.KDTerm or None."""
    at = target_logits(model, batch, kind)
    per_token = token_losses(at.logits, at.targets)  # [n_targets]

    # Label loss over label rows, rationale loss over rationale rows, mixed by alpha
    # (step_by_step); other methods: token mean over everything.
    total, label, rationale, n_label, n_rat = mix(cfg.method, cfg.alpha, per_token, at.task_ids)
    # Terms stay tensors (detached) so that logging does not force a device sync every step.
    terms = {"label_loss": label.detach(), "rationale_loss": rationale.detach()}

    # Soft-target distillation: per task in kd.tasks, (1 - w) * CE_task + w * KD_task, mixed by
    # alpha as above; logs kd_loss and kd_ce_loss (the CE it is weighed against). See kd/term.py.
    if kd_term is not None:
        total, kd_terms = kd_term(model, batch, at, cfg.method, cfg.alpha, label, rationale)
        terms.update(kd_terms)

    terms["loss"] = total.detach()
    return LossParts(total, label, rationale, n_label, n_rat, terms, at if keep_logits else None)


def forward_backward(
    model,
    step: Step,
    kind: str,
    cfg: TrainConfig,
    backward: Callable[[torch.Tensor], None],
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> LossParts:
    """Loss and gradients of one step, one forward and one `backward(loss)` per pass.

    The loss is the same as `compute_loss` on every row of the step in one batch: alpha * L_label +
    (1 - alpha) * L_rationale for step_by_step, the token mean otherwise. The returned parts are
    detached (the gradients are already in the parameters).
    """
    n_label, n_rationale = step.n_label_tokens, step.n_rationale_tokens
    sums = {LABEL_TASK: 0.0, RATIONALE_TASK: 0.0}
    total = 0.0
    for batch in step.passes:
        with autocast():
            at = target_logits(model, batch, kind)
            per_token = token_losses(at.logits, at.targets)  # [n_targets]
        weights = token_weights(cfg.method, cfg.alpha, at.task_ids, n_label, n_rationale)
        loss = (per_token * weights).sum()
        backward(loss)
        total = total + loss.detach()  # the weights carry the method's mix: the parts add up to it
        for task in sums:
            sums[task] = sums[task] + per_token.detach()[at.task_ids == task].sum()
    label = torch.as_tensor(sums[LABEL_TASK] / max(1, n_label))
    rationale = torch.as_tensor(sums[RATIONALE_TASK] / max(1, n_rationale))
    total = torch.as_tensor(total)
    terms = {"label_loss": label, "rationale_loss": rationale, "loss": total}
    return LossParts(total, label, rationale, n_label, n_rationale, terms)

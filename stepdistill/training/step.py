"""The training objective: the student and its loss in one `nn.Module` (the only code that
computes the training loss; the trainer, validation loss and the benchmarks all call `Objective`).

`Objective` is what `accelerator.prepare` wraps, so DDP and FSDP see every use of every parameter:
the target-only vocabulary projection and the optional soft-target term run inside its `forward`.
One forward is one pass (a Batch's rows); the trainer passes per-unit weights computed from the
counts of the WHOLE optimizer step (every micro-batch, every process), so the passes' losses add up,
over passes, micro-batches and processes, to

    step_by_step:   alpha * L_label + (1 - alpha) * L_rationale   (each a token mean over the step)
    other methods:  the token mean over every target token of the step

With a kd: section, each task t in kd.tasks contributes (1 - w) * CE_t + w * KD_t instead of CE_t;
KD_t is normalised like CE_t, by the step's task-t target tokens (label distributions: by its label
rows), and a token or row without teacher targets adds zero (see kd/term.py). On a kd.on_policy step
(kd/on_policy.py) a pass also holds the student's samples (`sampled` rows): they carry w * KD_t alone,
normalised by the step's sampled task-t tokens, and the data's rows carry (1 - w) * CE_t alone.

Memory and speed: lm_head runs only on the hidden states of target tokens, never on the full
[rows, seq, vocab] tensor (~80x less lm_head work for a 400-token prompt and a 5-token label). With
`loss_chunk_tokens` (train.loss_chunk_tokens) the projection, the cross-entropy and the token-level
KD term run `loss_chunk_tokens` target rows at a time (training/chunked_ce.py) once a pass has more
target tokens than that, so the [n_targets, vocab] logits of a long pass never exist at once; the
plain path (full target logits) is used when it is 0/None, when the pass has at most that many
target tokens, or when the output layer is not a plain nn.Linear. A packed
pass of a causal student (train.packing, training/packing.py) gathers the hidden states at target
indices computed at collation: no `nonzero` or boolean indexing on the device in its forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from stepdistill.training.batching import IGNORE, Batch, StepCounts
from stepdistill.training.chunked_ce import chunked_target_loss, plain_target_loss
from stepdistill.training.formatting import LABEL_TASK, RATIONALE_TASK, TASK_IDS


@dataclass
class TargetHidden:
    """Student hidden states at the positions that predict target tokens, flattened over the batch."""

    hidden: torch.Tensor  # [n_targets, hidden]
    targets: torch.Tensor  # [n_targets] token ids to predict
    rows: torch.Tensor  # [n_targets] batch row of each target token
    positions: torch.Tensor  # [n_targets] index of the token within its row's labels
    task_ids: torch.Tensor  # [n_targets] 0 label token, 1 rationale token


@dataclass
class TargetLogits:
    """Student logits at the positions that predict target tokens, flattened over the batch."""

    logits: torch.Tensor  # [n_targets, vocab]
    targets: torch.Tensor  # [n_targets] token ids to predict
    rows: torch.Tensor  # [n_targets] batch row of each target token
    positions: torch.Tensor  # [n_targets] index of the token within its row's labels
    task_ids: torch.Tensor  # [n_targets] 0 label token, 1 rationale token


@dataclass(frozen=True)
class Weights:
    """What one unit of loss weighs in the step's total (already divided by the step's counts)."""

    label: float  # per label target token
    rationale: float  # per rationale target token
    label_row: float  # per label row (label-distribution KD)
    sampled_label: float = 0.0  # per sampled label token (kd.on_policy)
    sampled_rationale: float = 0.0  # per sampled rationale token (kd.on_policy)


NO_WEIGHT = Weights(0.0, 0.0, 0.0)  # padding passes: gradients exactly zero


def step_weights(method: str, alpha: float, counts: StepCounts, scale: float = 1.0) -> Weights:
    """Per-unit weights of a step. `scale` is the number of processes: DDP and FSDP average the
    gradients over processes, so each process's share is multiplied back to a sum.

    step_by_step: alpha / N_label per label token, (1 - alpha) / N_rationale per rationale token;
    other methods: 1 / (N_label + N_rationale) per token.
    """
    n_lab, n_rat = counts.n_label_tokens, counts.n_rationale_tokens
    if method == "step_by_step":
        on_label = alpha / n_lab if n_lab else 0.0
        on_rat = (1.0 - alpha) / n_rat if n_rat else 0.0
    else:
        on_label = on_rat = 1.0 / max(1, n_lab + n_rat)
    task_mix = on_label * n_lab  # the label task's share of the total (alpha, or N_label / N)
    on_row = task_mix / counts.n_label_rows if counts.n_label_rows else 0.0
    # kd.on_policy: each task's share spread over the student's sampled tokens of that task
    s_lab, s_rat = counts.n_sampled_label_tokens, counts.n_sampled_rationale_tokens
    on_s_lab = task_mix / s_lab if s_lab else 0.0
    on_s_rat = on_rat * n_rat / s_rat if s_rat else 0.0
    return Weights(on_label * scale, on_rat * scale, on_row * scale, on_s_lab * scale, on_s_rat * scale)


@dataclass
class PassLoss:
    """The output of one forward: `total` is backpropagated; `sums` are detached sums for logging
    (loss: this pass's share of the step loss; label/rationale: CE summed over the pass's tokens;
    kd_<task>: the KD term summed over its units)."""

    total: torch.Tensor
    sums: dict[str, torch.Tensor]


def _tweaks(model) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The model's changes to lm_head's output (logits -> logits), or None when it has none."""
    bias = getattr(model, "final_logits_bias", None)  # BART-style output bias
    cap = getattr(model.config, "final_logit_softcapping", None)  # Gemma-2-style soft capping
    if bias is None and not cap:
        return None

    def tweak(logits: torch.Tensor) -> torch.Tensor:
        if bias is not None:
            logits = logits + bias[0]
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return tweak


def _project(model, hidden: torch.Tensor) -> torch.Tensor:
    """lm_head on selected hidden rows [n, hidden] -> [n, vocab], with the model's own output tweaks."""
    logits = model.get_output_embeddings()(hidden)
    tweak = _tweaks(model)
    return tweak(logits) if tweak is not None else logits


def _chunkable_head(model) -> torch.nn.Linear | None:
    """The output layer when it is a plain Linear (a peft wrapper around it takes the plain path)."""
    head = model.get_output_embeddings()
    return head if type(head) is torch.nn.Linear else None


def _packed_targets(model, batch: Batch) -> TargetHidden:
    # No attention mask and no cache: transformers then confines attention to each row from the
    # restarting position_ids (flash-attention: from the precomputed cu_seq_lens); see packing.py.
    p = batch.packed
    kwargs = p.attention_kwargs(model)
    hidden = model.get_decoder()(
        input_ids=batch.input_ids, position_ids=p.position_ids, use_cache=False, **kwargs
    )[0]
    hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, p.target_index)  # [n_targets, hidden]
    return TargetHidden(hidden, p.target_ids, p.target_rows, p.target_positions, p.target_tasks)


def _causal_targets(model, batch: Batch) -> TargetHidden:
    if batch.packed is not None:
        return _packed_targets(model, batch)
    hidden = model.get_decoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask)[0]
    # Position t predicts token t+1: shift labels left against the hidden states.
    labels = batch.labels[:, 1:]  # [rows, seq-1]
    rows, pos = (labels != IGNORE).nonzero(as_tuple=True)
    return TargetHidden(hidden[:, :-1][rows, pos], labels[rows, pos], rows, pos + 1, batch.task_ids[rows])


def _seq2seq_targets(model, batch: Batch) -> TargetHidden:
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
    return TargetHidden(hidden[rows, pos], batch.labels[rows, pos], rows, pos, batch.task_ids[rows])


def target_hidden(model, batch: Batch, kind: str) -> TargetHidden:
    """Student hidden states at every target token of the batch (one forward pass for all rows)."""
    if kind == "causal":
        return _causal_targets(model, batch)
    return _seq2seq_targets(model, batch)


def target_logits(model, batch: Batch, kind: str) -> TargetLogits:
    """Student logits at every target token of the batch (one forward pass for all rows)."""
    at = target_hidden(model, batch, kind)
    return TargetLogits(_project(model, at.hidden), at.targets, at.rows, at.positions, at.task_ids)


class Objective(torch.nn.Module):
    """The student and its loss. `model` is a transformers model or a peft model wrapping one;
    `kd_term` a stepdistill.kd.term.KDTerm or None (kept as a plain attribute: the teacher is not a
    submodule, so DDP/FSDP neither broadcast nor shard it); `chunk` the target rows per chunk of the
    chunked projection + loss (0 or None: the plain path on full target logits). How the tasks mix
    (method, alpha) arrives with each pass as its `Weights`."""

    def __init__(self, model: Any, kind: str, kd_term: Any = None, chunk: int | None = None):
        super().__init__()
        self.model = model
        self.kind = kind
        self.kd_term = kd_term
        self.chunk = chunk

    @property
    def base(self) -> Any:
        """The transformers model the loss runs on (LoRA layers injected in place)."""
        # A PeftModel wraps the transformers model; the model it wraps (LoRA layers injected, and a
        # `peft_config` attribute of its own) is used as it is.
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def sum_keys(self) -> list[str]:
        """The keys of PassLoss.sums, in a fixed order (they are reduced across processes as one vector)."""
        keys = ["loss", "label", "rationale"]
        return keys + ([f"kd_{t}" for t in self.kd_term.cfg.tasks] if self.kd_term is not None else [])

    def forward(self, batch: Batch, weights: Weights) -> PassLoss:
        """This pass's share of the step loss: CE per target token times its task's weight, and per
        KD task t, (1 - w) * CE_t + w * KD_t in place of CE_t (w = kd.weight)."""
        at = target_hidden(self.base, batch, self.kind)
        is_label = at.task_ids == LABEL_TASK
        unit = {"label": weights.label, "rationale": weights.rationale}
        on_token = torch.where(is_label, weights.label, weights.rationale)  # CE weight  # [n_targets]
        # Several rationales per example (training/rationales.py): each token also carries its row's weight.
        on_row = batch.row_weights[at.rows] if batch.row_weights is not None else None  # [n_targets]
        if on_row is not None:
            on_token = on_token * on_row
        on_kd = torch.zeros_like(on_token)  # token-level KD weight  # [n_targets]
        kd = None
        if self.kd_term is not None:
            w = self.kd_term.cfg.weight
            kd = self.kd_term.token_targets(batch, at)  # teacher targets per target token (or None)
            for task in self.kd_term.cfg.tasks:
                in_task = at.task_ids == TASK_IDS[task]
                on_token = torch.where(in_task, on_token * (1.0 - w), on_token)
                if task in self.kd_term.token_tasks:
                    on_kd = torch.where(in_task & kd.valid, w * unit[task], on_kd)
        own = None  # [n_targets] bool: tokens the student sampled (kd.on_policy), which carry no CE
        if batch.sampled is not None:
            own = batch.sampled[at.rows]
            per_sample = torch.where(is_label, weights.sampled_label, weights.sampled_rationale)
            on_token = torch.where(own, 0.0, on_token)
            on_kd = torch.where(own & kd.valid, self.kd_term.cfg.weight * per_sample, on_kd)
        total, per_token, per_kd = self._losses(at, on_token, on_kd, kd)
        ce_rows = per_token if own is None else per_token * ~own  # CE is logged over the data's rows
        if on_row is not None:  # logged sums weighted like the loss (their normalisers are weighted)
            ce_rows = ce_rows * on_row
        sums = {
            "label": (ce_rows * is_label).sum(),
            "rationale": (ce_rows * (at.task_ids == RATIONALE_TASK)).sum(),
        }
        if self.kd_term is not None:
            for task in self.kd_term.token_tasks:
                sums[f"kd_{task}"] = (per_kd * ((at.task_ids == TASK_IDS[task]) & kd.valid)).sum()
            if self.kd_term.soft_labels is not None and "label" in self.kd_term.cfg.tasks:
                # Label distributions: KD per label row, from the student's scores of the labels.
                mean, count = self.kd_term.soft_labels.loss_and_count(self.base, batch)
                total = total + self.kd_term.cfg.weight * weights.label_row * mean * count
                sums["kd_label"] = (mean * count).detach()
        sums["loss"] = total.detach()
        return PassLoss(total, sums)

    def _losses(self, at: TargetHidden, on_token, on_kd, kd):
        """(total, CE [n], KD [n]): chunked unless disabled, the output layer is not a plain Linear
        or the pass has no more targets than one chunk (then the full logits are no bigger than a
        chunk's, and the plain path was ~8% faster on CPU at batch 4)."""
        head = _chunkable_head(self.base)
        if self.chunk and head is not None and at.hidden.shape[0] > self.chunk:
            tweak = _tweaks(self.base)
            return chunked_target_loss(at.hidden, head, at.targets, on_token, on_kd, kd, tweak, self.chunk)
        logits = _project(self.base, at.hidden)  # [n_targets, vocab]
        return plain_target_loss(logits, at.targets, on_token, on_kd, kd)


def loss_terms(
    sums: dict[str, float], counts: StepCounts, method: str, alpha: float, scale: float, kd: Any = None
) -> dict[str, float]:
    """The logged terms of a step from its summed parts (over all passes and processes).

    loss: the optimised total; label_loss / rationale_loss: CE token means per task; with KD,
    kd_loss = sum_t m_t KD_t and kd_ce_loss = sum_t m_t CE_t over the KD tasks (m_t: the method's
    task weights), so loss = plain loss + w * (kd_loss - kd_ce_loss); with two KD tasks also
    kd_<task>_loss. `kd` is the run's KDTerm (or None)."""
    n = {"label": counts.n_label_tokens, "rationale": counts.n_rationale_tokens}
    terms = {
        "loss": sums["loss"] / scale,
        "label_loss": sums["label"] / max(1, n["label"]),
        "rationale_loss": sums["rationale"] / max(1, n["rationale"]),
    }
    if kd is None:
        return terms
    w = step_weights(method, alpha, counts)
    mix = {"label": w.label * n["label"], "rationale": w.rationale * n["rationale"]}
    kd_mean = {}
    # kd.on_policy steps take the KD term over the student's sampled tokens
    n_kd = {"label": counts.n_sampled_label_tokens or n["label"],
            "rationale": counts.n_sampled_rationale_tokens or n["rationale"]}  # fmt: skip
    for task in kd.cfg.tasks:
        per_row = task == "label" and kd.soft_labels is not None
        denom = counts.n_label_rows if per_row else n_kd[task]
        kd_mean[task] = sums[f"kd_{task}"] / max(1, denom)
    terms["kd_loss"] = sum(mix[t] * v for t, v in kd_mean.items())
    terms["kd_ce_loss"] = sum(mix[t] * terms[f"{t}_loss"] for t in kd_mean)
    if len(kd_mean) > 1:
        terms.update({f"kd_{t}_loss": v for t, v in kd_mean.items()})
    return terms

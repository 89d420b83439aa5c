"""The soft-target term of a training step: teacher targets for a batch, KD loss per task, mixing.

The trainer computes the student's logits at every target token ([n_targets, vocab], row-major over
the batch's target positions, with each token's task id). This module adds, per task t in kd.tasks,

    L_t = (1 - w) * CE_t + w * KD_t                 (w = kd.weight)

and the method's own mixing stays as it is: step_by_step gives alpha * L_label + (1 - alpha) *
L_rationale, so the default (KD on the label task only) is "KD on the label tokens, cross-entropy on
the rationale". Other methods have only label-task rows and get (1 - w) * CE + w * KD.

Teacher targets come from a white-box teacher run on the same batch (dense logits) or from a
precomputed top-k file keyed by `target_key(example_id, task)` (sparse targets).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from stepdistill.errors import DataError
from stepdistill.kd.config import KDConfig
from stepdistill.kd.losses import KDMonitor, dense_kd_loss, sparse_kd_loss
from stepdistill.kd.topk import TopKFile, read_topk
from stepdistill.kd.whitebox import IGNORE, load_teacher, teacher_target_logits

TASK_IDS = {"label": 0, "rationale": 1}  # the trainer's LABEL_TASK / RATIONALE_TASK


def sparse_for_batch(
    topk: TopKFile, keys: Sequence[str], labels: torch.Tensor, kind: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The collator hook: stored top-k targets aligned to the batch's target tokens.

    `keys[r]` names row r's targets. Returns ids, logprobs [n_targets, K] and a mask [n_targets]
    that is False where a row has no stored entry: its final eos token when the stored targets stop
    just before it (API log-probs end with the text, not with the student's eos).
    """
    shifted = labels[:, 1:] if kind == "causal" else labels
    counts = (shifted != IGNORE).sum(-1).tolist()
    if len(keys) != len(counts):
        raise ValueError(f"{len(keys)} keys for a batch of {len(counts)} rows")
    ids, lps, valid = [], [], []
    for key, n in zip(keys, counts):
        t = topk.get(key)
        if len(t) not in (n, n - 1):
            raise DataError(
                topk.path, None, "keys", f"'{key}' has {len(t)} target tokens, the student has {n}"
            )
        pad = n - len(t)
        ids.append(torch.nn.functional.pad(t.ids, (0, topk.k - t.ids.shape[1], 0, pad), value=-1))
        lps.append(
            torch.nn.functional.pad(t.logprobs, (0, topk.k - t.ids.shape[1], 0, pad), value=float("-inf"))
        )
        valid.append(torch.tensor([True] * len(t) + [False] * pad))
    return torch.cat(ids), torch.cat(lps), torch.cat(valid)


def kd_per_task(
    cfg: KDConfig,
    student_logits: torch.Tensor,
    task_ids: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    sparse: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """KD loss (token mean) of each task in cfg.tasks; student_logits [n_targets, vocab]."""
    out = {}
    for task in cfg.tasks:
        mask = task_ids == TASK_IDS[task]
        if teacher_logits is not None:
            out[task] = dense_kd_loss(
                student_logits, teacher_logits, mask, cfg.loss, cfg.temperature, cfg.jsd_beta
            )
        elif sparse is not None:
            ids, lps, valid = (t.to(student_logits.device) for t in sparse)
            out[task] = sparse_kd_loss(
                student_logits,
                ids,
                lps,
                mask & valid,
                cfg.loss,
                cfg.temperature,
                cfg.jsd_beta,
                cfg.sparse_mode,
            )
        else:
            raise ValueError("kd_per_task needs teacher_logits or sparse targets")
    return out


def mix_task_losses(
    method: str,
    alpha: float,
    weight: float,
    label: torch.Tensor,
    rationale: torch.Tensor,
    kd: dict[str, torch.Tensor],
) -> torch.Tensor:
    """The step's total with the KD terms folded into the task losses they belong to."""
    label_total = (1.0 - weight) * label + weight * kd["label"] if "label" in kd else label
    if method != "step_by_step":
        return label_total  # one task only: the token mean over label-task rows
    rationale_total = (
        (1.0 - weight) * rationale + weight * kd["rationale"] if "rationale" in kd else rationale
    )
    return alpha * label_total + (1.0 - alpha) * rationale_total


class KDTerm:
    """Built once per run; `__call__` gives the new total and the terms to log for one batch."""

    def __init__(
        self,
        cfg: KDConfig,
        teacher: Any = None,
        teacher_kind: str | None = None,
        topk: TopKFile | None = None,
    ):
        self.cfg, self.teacher, self.teacher_kind, self.topk = cfg, teacher, teacher_kind, topk
        self.monitor = KDMonitor(cfg.warn_ratio)

    @classmethod
    def from_config(cls, cfg: KDConfig, student_tokenizer: Any, student_model: Any, device: Any) -> KDTerm:
        """Load the teacher (or top-k file) and run the preflight checks (errors raise ConfigError)."""
        if cfg.source == "topk_file":
            return cls(cfg, topk=read_topk(cfg.topk_file))
        from transformers import AutoTokenizer

        from stepdistill.errors import ConfigError
        from stepdistill.kd.preflight import preflight

        if not cfg.teacher_model:
            raise ConfigError("kd.teacher_model is required when kd.source is 'whitebox'")
        dev = cfg.teacher_device or device
        teacher, kind = load_teacher(
            cfg.teacher_model, cfg.teacher_gguf_file, dev, cfg.teacher_dtype, cfg.trust_remote_code
        )
        kwargs = {"gguf_file": cfg.teacher_gguf_file} if cfg.teacher_gguf_file else {}
        teacher_tok = AutoTokenizer.from_pretrained(
            cfg.teacher_model, trust_remote_code=cfg.trust_remote_code, **kwargs
        )
        preflight(teacher_tok, student_tokenizer, teacher, student_model, device=str(dev)).raise_for_errors()
        return cls(cfg, teacher=teacher, teacher_kind=kind)

    def __call__(
        self, batch: Any, at: Any, method: str, alpha: float, label: torch.Tensor, rationale: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total, terms) for a trainer Batch and its TargetLogits `at` (logits, task_ids)."""
        if self.teacher is not None:
            t_logits = teacher_target_logits(
                self.teacher, batch.input_ids, batch.attention_mask, batch.labels, self.teacher_kind
            )
            kd = kd_per_task(self.cfg, at.logits, at.task_ids, teacher_logits=t_logits)
        else:
            sparse = sparse_for_batch(self.topk, batch.keys, batch.labels, batch.kind)
            kd = kd_per_task(self.cfg, at.logits, at.task_ids, sparse=sparse)
        total = mix_task_losses(method, alpha, self.cfg.weight, label, rationale, kd)
        ce = label if "label" in kd else rationale
        parts = {
            "ce_weighted": (1 - self.cfg.weight) * float(ce.detach()),
            "kd_weighted": self.cfg.weight * float(next(iter(kd.values())).detach()),
        }
        self.monitor.observe(parts)
        return total, {f"kd_{task}_loss": value.detach() for task, value in kd.items()}

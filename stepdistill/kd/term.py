"""The soft-target term of a training run: the teacher's targets for a batch's target tokens.

`KDTerm.from_config` loads what kd: asks for (a white-box teacher, a precomputed top-k file keyed by
`target_key(example_id, task)`, label distributions) and checks it; `KDTerm.token_targets` gives the
teacher's targets for every target token of a batch. The loss itself is computed in one place,
training/step.py `Objective.forward`: per task t in kd.tasks,

    L_t = (1 - w) * CE_t + w * KD_t                 (w = kd.weight)

and the method's own mixing stays as it is: step_by_step gives alpha * L_label + (1 - alpha) *
L_rationale, so the default (KD on the label task only) is "KD on the label tokens, cross-entropy on
the rationale". Other methods have only label-task rows and get (1 - w) * CE + w * KD.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from stepdistill.embedded import resolve_model
from stepdistill.errors import ConfigError, DataError
from stepdistill.kd.config import KDConfig
from stepdistill.kd.losses import KDMonitor, TokenKD
from stepdistill.kd.topk import TopKFile, read_topk
from stepdistill.kd.whitebox import load_teacher, teacher_target_logits
from stepdistill.training.batching import IGNORE


def sparse_for_batch(
    topk: TopKFile, keys: Sequence[str], labels: torch.Tensor, kind: str, missing_ok: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The collator hook: stored top-k targets aligned to the batch's target tokens.

    `keys[r]` names row r's targets. Returns ids, logprobs [n_targets, K] and a mask [n_targets]
    that is False where a row has no stored entry: its final eos token when the stored targets stop
    just before it (API log-probs end with the text, not with the student's eos). A row the file
    does not hold is an error, unless the file lists it as skipped or `missing_ok` (rows outside the
    training split, e.g. validation): then it gets no KD term.
    """
    shifted = labels[:, 1:] if kind == "causal" else labels
    counts = (shifted != IGNORE).sum(-1).tolist()
    if len(keys) != len(counts):
        raise ValueError(f"{len(keys)} keys for a batch of {len(counts)} rows")
    ids, lps, valid = [], [], []
    for key, n in zip(keys, counts):
        if key not in topk and (missing_ok or key in topk.skipped):
            # The precompute could not align this row (e.g. an API label tokenised differently in
            # context): no KD term for it, by record in the file rather than by accident.
            ids.append(torch.full((n, topk.k), -1, dtype=torch.long))
            lps.append(torch.full((n, topk.k), float("-inf")))
            valid.append(torch.zeros(n, dtype=torch.bool))
            continue
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


def teacher_source(cfg: KDConfig) -> tuple[str, str | None]:
    """(folder, gguf file) of the white-box teacher; "embedded:smollm2" is the shipped GGUF."""
    if not cfg.teacher_model:
        raise ConfigError("kd.teacher_model is required for a white-box teacher")
    return resolve_model(cfg.teacher_model, cfg.teacher_gguf_file)


def load_checked_teacher(cfg: KDConfig, student_tokenizer: Any, student_model: Any, device: Any):
    """Load the white-box teacher and run the preflight checks (errors raise ConfigError)."""
    from transformers import AutoTokenizer

    from stepdistill.kd.preflight import preflight

    path, gguf = teacher_source(cfg)
    dev = cfg.teacher_device or device
    teacher, kind = load_teacher(path, gguf, dev, cfg.teacher_dtype, cfg.trust_remote_code)
    kwargs = {"gguf_file": gguf} if gguf else {}
    teacher_tok = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code, **kwargs)
    preflight(teacher_tok, student_tokenizer, teacher, student_model, device=str(dev)).raise_for_errors()
    return teacher, kind


class KDTerm:
    """Built once per run; the trainer's Objective reads `cfg`, `token_tasks`, `token_targets`
    and `soft_labels`. KD_t is token-level (teacher logits or a top-k file) except for the label
    task under kd.label_distribution, where it compares label distributions (`soft_labels`, a
    kd.soft_labels.SoftLabels)."""

    def __init__(
        self,
        cfg: KDConfig,
        teacher: Any = None,
        teacher_kind: str | None = None,
        topk: TopKFile | None = None,
        soft_labels: Any = None,
    ):
        self.cfg, self.teacher, self.teacher_kind, self.topk = cfg, teacher, teacher_kind, topk
        self.soft_labels = soft_labels
        self.token_tasks = [t for t in cfg.tasks if not (t == "label" and soft_labels is not None)]
        self.monitor = KDMonitor(cfg.warn_ratio)
        self.missing_ok = False  # rows without stored top-k targets are an error (see for_unseen_rows)

    def for_unseen_rows(self) -> KDTerm:
        """This term for rows outside the training split (validation loss): stored targets exist
        for training rows only, so a row without them adds no KD instead of being an error."""
        other = copy.copy(self)
        other.missing_ok = True
        return other

    @classmethod
    def from_config(
        cls,
        cfg: KDConfig,
        student_tokenizer: Any,
        student_model: Any,
        device: Any,
        train: Any = None,
        task: Any = None,
        annotations: Sequence[Any] = (),
    ) -> KDTerm:
        """Load what the term needs (teacher, top-k file, label distributions) and check it.

        `train` (TrainConfig), `task` and the training `annotations` are needed for
        kd.label_distribution. Combinations of kd: with other sections are checked when the config
        loads (stepdistill/config.py)."""
        token_tasks = [t for t in cfg.tasks if not (t == "label" and cfg.label_distribution)]
        wants_teacher = (token_tasks and cfg.source == "whitebox") or (
            cfg.label_distribution and cfg.label_distribution_from == "teacher"
        )
        teacher = kind = None
        if wants_teacher:
            teacher, kind = load_checked_teacher(cfg, student_tokenizer, student_model, device)
        topk = read_topk(cfg.topk_file) if token_tasks and cfg.source == "topk_file" else None
        soft = None
        if cfg.label_distribution:
            from stepdistill.kd.soft_labels import SoftLabels

            if task is None or train is None:
                raise ValueError("kd.label_distribution needs the task and the train config")
            soft = SoftLabels(cfg, task, student_tokenizer, train, teacher, kind, annotations)
        return cls(cfg, teacher=teacher, teacher_kind=kind, topk=topk, soft_labels=soft)

    def token_targets(self, batch: Any, at: Any) -> TokenKD | None:
        """The teacher's targets for every target token of `batch` (row-major like `at`, whose
        `task_ids` say which tokens are which), or None when no KD task is token-level. A token without
        stored targets has `valid` False and a placeholder entry (its term is finite, its weight 0)."""
        if not self.token_tasks:
            return None
        c = self.cfg
        if self.teacher is not None:
            t_logits = teacher_target_logits(
                self.teacher, batch.input_ids, batch.attention_mask, batch.labels, self.teacher_kind
            )
            valid = torch.ones_like(at.task_ids, dtype=torch.bool)
            return TokenKD(c.loss, c.temperature, c.jsd_beta, c.sparse_mode, valid, teacher_logits=t_logits)
        if batch.keys is None:
            raise ValueError("kd.source 'topk_file' needs batches encoded with example ids (keys)")
        ids, lps, valid = (
            t.to(at.task_ids.device)
            for t in sparse_for_batch(self.topk, batch.keys, batch.labels, batch.kind, self.missing_ok)
        )
        # Placeholder for tokens without targets: one entry (id 0, probability 1).
        ids = torch.where(valid[:, None], ids, torch.full_like(ids, -1))
        ids[:, 0] = torch.where(valid, ids[:, 0], torch.zeros_like(ids[:, 0]))
        lps = torch.where(valid[:, None], lps, torch.full_like(lps, float("-inf")))
        lps[:, 0] = torch.where(valid, lps[:, 0], torch.zeros_like(lps[:, 0]))
        return TokenKD(c.loss, c.temperature, c.jsd_beta, c.sparse_mode, valid, ids=ids, logprobs=lps)

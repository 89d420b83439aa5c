"""Label-distribution KD inside a training step, for tasks with a closed label set.

For every label row of a batch the student scores each candidate label string by the sum of its
target-token log-probs after the row's own source (the same tokens it trains on: label + eos), and
the label task's KD term is the divergence between the teacher's distribution over the labels and
the student's normalised scores (kd/labels.py: `label_kd_loss`). The teacher distribution comes from

    teacher      the white-box teacher scoring the same candidates (computed once per example, cached)
    annotations  the API log-probs stored with each annotation (`teacher_logprobs`): the answer
                 token's top alternatives after the task's answer phrase (`api_label_distribution`)

Student scores use the trainer's gathered-logits path (training/step.py), so the output layer only
runs at the candidates' target tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from stepdistill.errors import ConfigError, DataError
from stepdistill.kd.labels import (
    answer_position,
    api_label_distribution,
    candidate_batch,
    label_kd_loss,
    label_scores,
)
from stepdistill.schema import Annotation
from stepdistill.tasks.base import Task
from stepdistill.training.batching import IGNORE
from stepdistill.training.formatting import LABEL_TASK

log = logging.getLogger(__name__)


def row_sources(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, kind: str):
    """The source token ids of each row of a padded trainer batch (what precedes the target)."""
    out = []
    for r in range(input_ids.shape[0]):
        if kind == "causal":
            start = int((labels[r] != IGNORE).nonzero()[0])  # first target token
            out.append(input_ids[r, :start].tolist())
        else:
            out.append(input_ids[r][attention_mask[r].bool()].tolist())
    return out


def student_label_scores(
    model: Any, kind: str, prompts: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]], pad_id: int
) -> torch.Tensor:
    """Summed log-probs of every candidate after every prompt, [n_prompts, n_candidates], with
    gradients; lm_head runs only at target tokens (the trainer's own path)."""
    from stepdistill.training.batching import Batch
    from stepdistill.training.step import target_logits

    ids, mask, labels = candidate_batch(prompts, candidates, kind, pad_id)
    dev = next(model.parameters()).device
    task_ids = torch.zeros(ids.shape[0], dtype=torch.long)
    batch = Batch(ids, mask, labels, task_ids, len(prompts), kind).to(dev)
    at = target_logits(model, batch, kind)  # logits [n_targets, vocab], rows [n_targets]
    picked = torch.log_softmax(at.logits.float(), -1).gather(-1, at.targets.unsqueeze(-1)).squeeze(-1)
    scores = torch.zeros(ids.shape[0], device=picked.device, dtype=picked.dtype)
    scores = scores.index_add(0, at.rows, picked)
    return scores.view(len(prompts), len(candidates))


def api_distributions(task: Task, annotations: Sequence[Annotation]) -> tuple[dict[str, torch.Tensor], int]:
    """{example id: teacher distribution over task.labels} from stored API log-probs, and the number
    of annotations without log-probs (they get no label-distribution term)."""
    out, missing = {}, 0
    for ann in annotations:
        if not ann.teacher_logprobs:
            missing += 1
            continue
        where = f"annotation '{ann.id}'"
        pos = answer_position(ann.teacher_logprobs, task.answer_phrase, where)
        try:
            probs = api_label_distribution(ann.teacher_logprobs[pos], task.labels)
        except ValueError as err:
            raise DataError(where, None, "teacher_logprobs", str(err)) from None
        out[ann.id] = torch.tensor(probs)
    return out, missing


class SoftLabels:
    """The label-distribution term of one run: candidate token ids, teacher distributions."""

    def __init__(
        self,
        cfg: Any,
        task: Task,
        tokenizer: Any,
        train: Any,
        teacher: Any = None,
        teacher_kind: str | None = None,
        annotations: Sequence[Annotation] = (),
    ):
        from stepdistill.training.batching import encode_target

        if not task.labels:
            raise ConfigError(f"kd.label_distribution: task '{task.name}' has no closed label set (labels)")
        self.cfg, self.teacher_kind = cfg, teacher_kind
        # One source only: with annotations, examples without log-probs get no term (not the teacher's).
        self.teacher = teacher if cfg.label_distribution_from == "teacher" else None
        self.labels = list(task.labels)
        self.candidates = [encode_target(tokenizer, task.format_target(lab), train) for lab in self.labels]
        self.pad_id = tokenizer.pad_token_id
        self.cache: dict[str, torch.Tensor] = {}  # example id -> teacher probabilities [C]
        if cfg.label_distribution_from == "annotations":
            self.cache, missing = api_distributions(task, annotations)
            if not self.cache:
                raise ConfigError(
                    "kd.label_distribution_from 'annotations': no training annotation has teacher_logprobs"
                )
            if missing:
                log.warning(
                    "%d training examples have no teacher_logprobs: no label-distribution term", missing
                )

    def _teacher_probs(self, ids: list[str | None], prompts: list[list[int]]) -> list[torch.Tensor | None]:
        """Teacher distributions of the rows; white-box scores are computed once per example id."""
        out = [self.cache.get(key) if key is not None else None for key in ids]
        todo = [i for i, p in enumerate(out) if p is None]
        if todo and self.teacher is not None:
            with torch.no_grad():
                scores = label_scores(
                    self.teacher, self.teacher_kind, [prompts[i] for i in todo], self.candidates, self.pad_id
                )
            fresh = torch.softmax(scores.float(), -1).cpu()
            for j, i in enumerate(todo):
                out[i] = fresh[j]
                if ids[i] is not None:
                    self.cache[ids[i]] = fresh[j]
        return out

    def loss_and_count(self, model: Any, batch: Any) -> tuple[torch.Tensor, int]:
        """The mean KD over the label rows that have a teacher distribution, and their number."""
        rows = (batch.task_ids == LABEL_TASK).nonzero(as_tuple=True)[0].tolist()
        keys = batch.keys or [None] * batch.task_ids.shape[0]
        ids = [keys[r].split("\t")[0] if keys[r] else None for r in rows]
        prompts = row_sources(batch.input_ids, batch.attention_mask, batch.labels, batch.kind)
        prompts = [prompts[r] for r in rows]
        probs = self._teacher_probs(ids, prompts)
        keep = [i for i, p in enumerate(probs) if p is not None]
        dev = batch.input_ids.device
        if not keep:
            return torch.zeros((), device=dev), 0
        scores = student_label_scores(
            model, batch.kind, [prompts[i] for i in keep], self.candidates, self.pad_id
        )
        teacher = torch.stack([probs[i] for i in keep]).to(scores.device)
        c = self.cfg
        return label_kd_loss(scores, teacher, c.loss, c.temperature, c.jsd_beta), len(keep)

"""On-policy distillation (kd.on_policy): the student writes, the teacher grades every token.

Off-policy KD trains the student on text the data or the teacher wrote; at test time the student
conditions on its own tokens instead and drifts where it was never trained. On an on-policy step
(a share `lmbda` of the optimizer steps, GKD, Agarwal et al. 2024) the student first samples the
targets of its KD rows -- the label of a `predict:` row and the rationale of an `explain:` row for
step_by_step, the whole output for answer_first / single_task -- and the teacher scores each sampled
token, conditioned on the same input. The step then holds, per pass,

    the data's rows      (1 - w) * CE_t                     (the method's hard-label loss, as always)
    the student's rows   w * KD_t(teacher || student)       (kd.loss / kd.jsd_beta / kd.temperature)

with each term a token mean over the whole step (all micro-batches, all processes): the sampled
rows' KD over the step's sampled tokens of task t, so the usual alpha mixing of step_by_step holds.

Sampling: batched generation with the KV cache, in eval mode, under no_grad, left-padded; each row
draws its tokens with Gumbel-max noise from a generator seeded by (train.seed, step, row key), so a
row's sample does not depend on its batch mates, its process or a restart: `--resume` repeats it
bit for bit and 1 and N processes sample the same text. A label row stops at the end of its line
(or eos), other rows at eos; a row still going after max_new_tokens is scored as it is (no eos) and
counted as truncated.

Cost: the sampling (a forward over prompt and sample) and the sampled rows' training (3x forward)
are added to train_flops, which the report's matched-compute comparisons read; metrics.json's
train.on_policy holds the counts, the generation seconds and the teacher's scoring FLOPs (not in
train_flops: the off-policy teacher's forward is not either).

Teachers: the white-box one (kd.source whitebox: dense logits on the same padded rows) or a llama.cpp
server (kd.source server, kd/server.py: sparse top-k over HTTP; it also scores the data's KD rows on
the off-policy steps of a mixed run).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from stepdistill.errors import ConfigError
from stepdistill.kd.config import KDConfig
from stepdistill.kd.losses import TokenKD
from stepdistill.kd.term import KDTerm
from stepdistill.kd.whitebox import teacher_target_logits
from stepdistill.training.batching import IGNORE, Batch, Encoded, RankStep, collate
from stepdistill.training.config import TrainConfig
from stepdistill.training.flops import FlopModel
from stepdistill.training.formatting import LABEL_TASK, RATIONALE_TASK

log = logging.getLogger(__name__)
TASK_IDS = {"label": LABEL_TASK, "rationale": RATIONALE_TASK}
# Methods whose label rows hold the label alone: their samples end with the label's line.
LINE_LABELS = ("standard", "distill", "step_by_step", "rationale_input")
# The per-step counters kept in metrics.json (train.on_policy), summed over processes.
COUNTERS = ("samples", "truncated", "sampled_tokens", "generation_flops", "train_flops", "teacher_flops")


def _unit(*parts: object) -> float:
    """A number in [0, 1) that depends on `parts` only (not on Python's per-process hash seed)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def is_on_policy_step(seed: int, step: int, lmbda: float) -> bool:
    """Whether optimizer step `step` samples its KD targets: the same answer on every process and
    after a restart; lmbda 0 never, 1 always."""
    return lmbda >= 1.0 or (lmbda > 0.0 and _unit("on-policy", seed, step) < lmbda)


def row_seed(seed: int, step: int, key: str) -> int:
    """The seed of one row's sample at one step (key: "<example id>\\t<task>")."""
    return int(_unit("sample", seed, step, key) * 2**63)


class GumbelMax:
    """Logits processor that turns greedy decoding into sampling at `temperature`, row by row.

    argmax(logits / T + Gumbel noise) is an exact draw from softmax(logits / T); the noise of row i
    comes from its own generator, so its sample is the same in any batch and on any device."""

    def __init__(self, seeds: list[int], temperature: float):
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.temperature = temperature

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        vocab = scores.shape[-1]  # [rows, vocab]
        uniform = torch.stack([torch.rand(vocab, generator=g, dtype=torch.float64) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-300)))
        return scores.float() / self.temperature + gumbel.to(scores.device, torch.float32)


class StopAtLineEnd:
    """Stopping criterion: rows in `line_rows` are done once their last token holds a newline."""

    def __init__(self, line_rows: torch.Tensor, newline_ids: torch.Tensor):
        self.line_rows, self.newline_ids = line_rows, newline_ids

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        last = input_ids[:, -1]
        return self.line_rows.to(last.device) & torch.isin(last, self.newline_ids.to(last.device))


@dataclass
class Samples:
    """The student's sampled target tokens per row (stop token included) and which ran out of room."""

    tokens: list[list[int]]
    truncated: list[bool]


def newline_ids(tokenizer: Any, vocab: int) -> torch.Tensor:
    """Ids of every token whose text holds a newline (where a label's line ends)."""
    texts = tokenizer.batch_decode([[i] for i in range(min(vocab, len(tokenizer)))])
    return torch.tensor([i for i, t in enumerate(texts) if "\n" in t], dtype=torch.long)


@torch.no_grad()
def sample(
    model: Any,
    kind: str,
    sources: list[list[int]],
    seeds: list[int],
    line_rows: list[bool],
    *,
    pad_id: int,
    eos_id: int,
    newlines: torch.Tensor,
    temperature: float,
    max_new_tokens: int,
) -> Samples:
    """Sample a target for each source (token ids; causal sources end with the separator) with the
    KV cache, left-padded for a decoder-only model. Rows in `line_rows` stop at their line's end."""
    from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

    from stepdistill.training.batching import pad_rows

    device = next(model.parameters()).device
    causal = kind == "causal"
    ids, mask = pad_rows(sources, pad_id, left=causal)
    lines = torch.tensor(line_rows, dtype=torch.bool)
    # Greedy over Gumbel-perturbed logits = sampling; no other processor (top-k, penalties) applies.
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad_id,
        eos_token_id=eos_id, use_cache=True,
    )  # fmt: skip
    was_training = model.training
    model.eval()  # no dropout while sampling
    try:
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            generation_config=config,
            logits_processor=LogitsProcessorList([GumbelMax(seeds, temperature)]),
            stopping_criteria=StoppingCriteriaList([StopAtLineEnd(lines, newlines)]),
        )
    finally:
        model.train(was_training)
    new = (out[:, ids.shape[1] :] if causal else out[:, 1:]).cpu()  # seq2seq: drop the start token
    tokens, truncated = [], []
    for row, line in zip(new.tolist(), line_rows):
        end = next(
            (j for j, t in enumerate(row) if t == eos_id or (line and bool((newlines == t).any()))), None
        )
        tokens.append(row if end is None else row[: end + 1])
        truncated.append(end is None)
    return Samples(tokens, truncated)


def row_parts(batch: Batch) -> list[tuple[list[int], list[int]]]:
    """(source, target) token ids of each row of a padded (not packed) batch."""
    out = []
    for r in range(batch.input_ids.shape[0]):
        mask = batch.attention_mask[r].bool()
        target = batch.labels[r][batch.labels[r] != IGNORE].tolist()
        if batch.kind == "causal":
            start = int((batch.labels[r] != IGNORE).nonzero()[0])  # the first target position
            source = batch.input_ids[r, :start].tolist()
        else:
            source = batch.input_ids[r][mask].tolist()
        out.append((source, target))
    return out


def with_samples(batch: Batch, chosen: list[int], samples: Samples, pad_id: int) -> Batch:
    """The pass `batch` plus one row per chosen row whose target is the student's sample (same
    source, task and key), flagged in `sampled`; the data's rows come first, unchanged in content."""
    parts = row_parts(batch)
    task_ids = batch.task_ids.tolist()
    keys = batch.keys or [None] * len(parts)
    rows = [Encoded(s, t, task_ids[r], keys[r]) for r, (s, t) in enumerate(parts)]
    rows += [Encoded(parts[r][0], tokens, task_ids[r], keys[r]) for r, tokens in zip(chosen, samples.tokens)]
    out = collate([[e] for e in rows], pad_id, batch.kind)
    sampled = torch.tensor([False] * len(parts) + [True] * len(chosen))
    return dataclasses.replace(out, n_examples=batch.n_examples, sampled=sampled)


class OnPolicyTerm:
    """The run's KD term (a kd.term.KDTerm, whose teacher and divergence it uses) with on-policy
    steps: `sample_step` adds the student's samples to a step, `token_targets` has the teacher
    score them. Off-policy steps (and lmbda 0) are the KDTerm's own, unchanged."""

    def __init__(self, term: KDTerm, train: TrainConfig, tokenizer: Any, student_model: Any, kind: str):
        if term.cfg.on_policy is None:
            raise ValueError("OnPolicyTerm needs a kd config with an on_policy section")
        self.term, self.train, self.kind = term, train, kind
        self.op = term.cfg.on_policy
        self.pad_id, self.eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
        vocab = student_model.get_output_embeddings().weight.shape[0]
        self.newlines = newline_ids(tokenizer, vocab)
        self.max_new_tokens = self.op.max_new_tokens or train.max_target_length
        self.flops = FlopModel.from_model(student_model, kind)
        teacher = term.teacher
        self.teacher_flops = FlopModel.from_model(teacher, term.teacher_kind) if teacher is not None else None
        self.line_labels = train.method in LINE_LABELS
        self.sampled_tasks = {TASK_IDS[t] for t in term.token_tasks}
        self.server, self.unscored = None, 0
        if term.cfg.source == "server":  # kd/server.py: scores through HTTP, checked now
            from stepdistill.kd.server import ServerTeacher

            if kind != "causal":
                raise ConfigError(
                    "kd.source 'server' scores a decoder-only student's text; this student is seq2seq"
                )
            self.server = ServerTeacher(term.cfg.server, tokenizer, term.cfg.topk)
            self.server.check(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)

    def for_unseen_rows(self) -> OnPolicyTerm:
        """This term for the validation loss: the data's rows only (no step samples there), scored
        as on an off-policy step (see KDTerm.for_unseen_rows)."""
        other = copy.copy(self)
        other.term = self.term.for_unseen_rows()
        return other

    # What the Objective and the loop read off a KD term.
    @property
    def cfg(self) -> KDConfig:
        return self.term.cfg

    @property
    def token_tasks(self) -> list[str]:
        return self.term.token_tasks

    @property
    def soft_labels(self) -> Any:
        return self.term.soft_labels

    @property
    def monitor(self) -> Any:
        return self.term.monitor

    def token_targets(self, batch: Batch, at: Any) -> TokenKD | None:
        """Teacher targets at every target token of `batch`; on an on-policy pass only the sampled
        rows' tokens have them (`valid`), the data's rows carry CE alone."""
        if batch.sampled is None and self.server is None:
            return self.term.token_targets(batch, at)
        if batch.sampled is not None:
            sel = batch.sampled
        else:  # an off-policy step with a server teacher: it scores the data's KD rows
            sel = torch.isin(
                batch.task_ids, torch.tensor(sorted(self.sampled_tasks), device=batch.task_ids.device)
            )
        own = sel[at.rows]  # [n_targets] bool
        if self.server is not None:
            return self._server_targets(batch, sel, own)
        scored = teacher_target_logits(  # [n_sampled_targets, vocab], row-major like `own`
            self.term.teacher,
            batch.input_ids[sel],
            batch.attention_mask[sel],
            batch.labels[sel],
            self.term.teacher_kind,
        )
        full = scored.new_zeros(own.shape[0], scored.shape[-1])  # placeholders: weight 0, finite
        full[own] = scored
        c = self.cfg
        return TokenKD(c.loss, c.temperature, c.jsd_beta, c.sparse_mode, own, teacher_logits=full)

    def _server_targets(self, batch: Batch, sel: torch.Tensor, own: torch.Tensor) -> TokenKD:
        """Sparse top-k targets from the server for the rows in `sel`; placeholders elsewhere."""
        parts = row_parts(batch.to("cpu"))
        scored = [self.server.score(s + t, len(s)) for r, (s, t) in enumerate(parts) if bool(sel[r])]
        k = max(x.ids.shape[1] for x, _ in scored)
        n = own.shape[0]
        ids = torch.full((n, k), -1, dtype=torch.long)
        lps = torch.full((n, k), float("-inf"))
        ids[:, 0], lps[:, 0] = 0, 0.0  # placeholder entry (id 0, probability 1): finite, weight 0
        mask = own.cpu()
        pad = [k - x.ids.shape[1] for x, _ in scored]
        ids[mask] = torch.cat([F.pad(x.ids, (0, p), value=-1) for (x, _), p in zip(scored, pad)])
        lps[mask] = torch.cat(
            [F.pad(x.logprobs, (0, p), value=float("-inf")) for (x, _), p in zip(scored, pad)]
        )
        valid = torch.zeros(n, dtype=torch.bool)
        valid[mask] = torch.cat([v for _, v in scored])
        if not bool(valid[mask].all()):
            self.unscored += int((~valid[mask]).sum())
            log.warning("kd.server: %d sampled tokens so far had no teacher targets (the server "
                        "tokenised the text differently from there on)", self.unscored)  # fmt: skip
        c, dev = self.cfg, own.device
        return TokenKD(c.loss, c.temperature, c.jsd_beta, c.sparse_mode, valid.to(dev), ids=ids.to(dev),
                       logprobs=lps.to(dev))  # fmt: skip

    def _extend(self, model: Any, batch: Batch, step: int) -> tuple[Batch, dict[str, int]]:
        """One pass with its KD rows' samples added, and what they cost."""
        if batch.keys is None:
            raise ValueError("kd.on_policy needs batches encoded with example ids (keys)")
        tasks = batch.task_ids.tolist()
        chosen = [r for r, t in enumerate(tasks) if t in self.sampled_tasks]
        if not chosen:
            return batch, dict.fromkeys(COUNTERS, 0)
        sources = [s for s, _ in (row_parts(batch)[r] for r in chosen)]
        samples = sample(
            model,
            self.kind,
            sources,
            [row_seed(self.train.seed, step, batch.keys[r]) for r in chosen],
            [self.line_labels and tasks[r] == LABEL_TASK for r in chosen],
            pad_id=self.pad_id,
            eos_id=self.eos_id,
            newlines=self.newlines,
            temperature=self.op.sample_temperature,
            max_new_tokens=self.max_new_tokens,
        )
        rows = [(len(s), len(t)) for s, t in zip(sources, samples.tokens)]
        forward = self.flops.forward_flops(rows)
        stats = {
            "samples": len(chosen),
            "truncated": sum(samples.truncated),
            "sampled_tokens": sum(n for _, n in rows),
            "generation_flops": forward,  # a forward over prompt and sample (KV cache)
            "train_flops": 3 * forward,  # forward and backward of the sampled rows
            "teacher_flops": self.teacher_flops.forward_flops(rows) if self.teacher_flops else 0,
        }
        label = sum(len(t) for r, t in zip(chosen, samples.tokens) if tasks[r] == LABEL_TASK)
        stats["label_tokens"], stats["rationale_tokens"] = label, stats["sampled_tokens"] - label
        return with_samples(batch, chosen, samples, self.pad_id), stats

    def sample_step(
        self, accelerator: Any, objective: Any, plan: RankStep, step: int, totals: dict[str, Any]
    ) -> tuple[RankStep, int]:
        """This process's step with the student's samples added when `step` is on-policy (every
        process decides alike), the step's counts completed with the sampled tokens of all
        processes, and the FLOPs to add to train_flops. `totals` (metrics.json) accumulates."""
        if not is_on_policy_step(self.train.seed, step, self.op.lmbda):
            return plan, 0
        from accelerate.utils import DistributedType

        if accelerator.distributed_type == DistributedType.FSDP:
            raise ConfigError(
                "kd.on_policy: sampling needs the whole student on each process; use DDP, not FSDP"
            )
        model = accelerator.unwrap_model(objective).base
        start = time.perf_counter()
        keys = (*COUNTERS, "label_tokens", "rationale_tokens")
        local = dict.fromkeys(keys, 0)
        micro = []
        for passes in plan.micro:
            new = []
            for batch, real in passes:
                if real:  # zero-weight filler passes stay as they are
                    with accelerator.autocast():
                        batch, stats = self._extend(model, batch, step)
                    local = {k: local[k] + stats[k] for k in keys}
                new.append((batch, real))
            micro.append(new)
        seconds = time.perf_counter() - start
        summed = torch.tensor([local[k] for k in keys], dtype=torch.int64, device=accelerator.device)
        if accelerator.num_processes > 1:  # every process reaches this at the same step
            summed = accelerator.reduce(summed, reduction="sum")
        every = dict(zip(keys, summed.cpu().tolist()))
        counts = dataclasses.replace(
            plan.counts,
            n_sampled_label_tokens=every["label_tokens"],
            n_sampled_rationale_tokens=every["rationale_tokens"],
        )
        totals["steps"] = totals.get("steps", 0) + 1
        for k in COUNTERS:
            totals[k] = totals.get(k, 0) + every[k]
        totals["generation_s"] = totals.get("generation_s", 0.0) + seconds  # this process's
        extra = every["generation_flops"] + every["train_flops"]
        return dataclasses.replace(plan, micro=micro, counts=counts), extra


def build(term: KDTerm, train: TrainConfig, tokenizer: Any, student_model: Any, kind: str) -> Any:
    """The run's KD term: `term` itself, or wrapped for on-policy steps when kd.on_policy is set."""
    if term.cfg.on_policy is None:
        return term
    return OnPolicyTerm(term, train, tokenizer, student_model, kind)

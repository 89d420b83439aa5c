"""Tokenise training pairs, plan length-grouped batches and collate them with dynamic padding.

A step holds whole examples: for step_by_step both the label row and the rationale row of each
example go into the SAME step, told apart by `task_ids` (0 label, 1 rationale). Within a step the
rows are cut into forward passes (`plan_passes`): one pass per task, so that short label rows are
not padded to the length of the rationale rows, and, with a token budget, passes of at most that
many padded tokens, so that peak activation memory does not grow with the rationale's length.

Causal students see `source + SEP + target + eos` with loss only on the target tokens; seq2seq
students read `source` in the encoder and learn `target + eos` in the decoder. The batch order is a
pure function of (seed, epoch), so a resumed run sees exactly the batches an uninterrupted one does.

With `pack_tokens` (train.packing), a causal student's passes are packed into token buffers instead
of padded rows (training/packing.py); the step plan, the counts and the passes are the same.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stepdistill.training.config import TrainConfig
from stepdistill.training.formatting import LABEL_TASK, RATIONALE_TASK, Pair
from stepdistill.training.packing import Packed, pack, tensor_fields

IGNORE = -100  # label value for tokens that carry no loss (source, padding)
CAUSAL_SEP = "\n"  # between source and target for decoder-only students (also ends the test prompt)
MEGABATCH = 50  # batches per length-sorted group: long enough to group, short enough to stay random


@dataclass(frozen=True)
class Encoded:
    source: list[int]  # token ids the model reads (causal: including the separator)
    target: list[int]  # token ids it learns, ending with eos
    task_id: int
    key: str | None = None  # "<example id>\t<task>": names the row's precomputed teacher targets
    weight: float = 1.0  # loss weight of the row (train.rationale_weighting; training/rationales.py)


def encode_source(tokenizer, text: str, cfg: TrainConfig, kind: str) -> list[int]:
    """Source token ids, truncated to max_input_length; used for training and for test prompts."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if kind == "causal":
        sep = tokenizer(CAUSAL_SEP, add_special_tokens=False)["input_ids"]
        return ids[: max(1, cfg.max_input_length - len(sep))] + sep
    return ids[: cfg.max_input_length]


def encode_target(tokenizer, text: str, cfg: TrainConfig) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[: cfg.max_target_length - 1] + [tokenizer.eos_token_id]


def row_key(example_id: str, task_id: int) -> str:
    """The key of a row's teacher targets in a top-k file (= kd.topk.target_key)."""
    return f"{example_id}\t{'rationale' if task_id == RATIONALE_TASK else 'label'}"


def encode_examples(
    tokenizer, examples: list[list[Pair]], cfg: TrainConfig, kind: str, ids: list[str] | None = None
) -> list[list[Encoded]]:
    """Token ids of every pair; with `ids` (one per example) each row also carries its key."""
    return [
        [
            Encoded(
                encode_source(tokenizer, p.source, cfg, kind),
                encode_target(tokenizer, p.target, cfg),
                p.task_id,
                row_key(ids[i], p.task_id) if ids is not None else None,
                p.weight,
            )
            for p in ex
        ]
        for i, ex in enumerate(examples)
    ]


def example_length(example: list[Encoded]) -> int:
    """Tokens an example adds to a batch's padded width (its longest row)."""
    return max(len(e.source) + len(e.target) for e in example)


def plan_epoch(
    lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool
) -> list[list[int]]:
    """Example indices of each batch of one epoch, determined by (seed, epoch) alone.

    With grouping, a shuffled order is cut into mega-batches, each sorted by length and cut into
    batches (little padding), then the batch order is shuffled and the longest batch put first so
    that an out-of-memory error shows at once rather than hours in.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths)).tolist()
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    span = batch_size * MEGABATCH
    for start in range(0, len(order), span):
        mega = sorted(order[start : start + span], key=lambda i: -lengths[i])
        batches.extend(mega[i : i + batch_size] for i in range(0, len(mega), batch_size))
    perm = rng.permutation(len(batches)).tolist()
    batches = [batches[i] for i in perm]
    longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
    batches[0], batches[longest] = batches[longest], batches[0]
    return batches


@dataclass
class Batch:
    """Padded tensors of one forward pass; rows are pairs, `n_examples` counts examples. A packed
    pass (`packed` set) holds token buffers instead of rows in input_ids/attention_mask/labels."""

    input_ids: torch.Tensor  # [rows, src_len] (causal: [rows, seq_len]; packed: [buffers, width])
    attention_mask: torch.Tensor  # same shape; 1 on real tokens
    labels: (
        torch.Tensor
    )  # [rows, tgt_len] (causal: [rows, seq_len]; packed: [buffers, width]); IGNORE where no loss
    task_ids: torch.Tensor  # [rows]; 0 label row, 1 rationale row
    n_examples: int
    kind: str  # "causal" or "seq2seq"
    keys: list[str] | None = None  # per row, when encoded with example ids (top-k targets, KD)
    packed: Packed | None = None  # positions and target indices of a packed pass
    sampled: torch.Tensor | None = None  # [rows] bool: the target is the student's sample (kd.on_policy)
    row_weights: torch.Tensor | None = None  # [rows] loss weight per row; None: every row 1

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        """A copy with `fn` applied to every tensor, the packed ones included (other fields shared)."""
        changes: dict = tensor_fields(self, fn)
        if self.packed is not None:
            changes["packed"] = self.packed.map_tensors(fn)
        return dataclasses.replace(self, **changes)

    def to(self, device, non_blocking: bool = False) -> Batch:
        return self.map_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    @property
    def n_tokens(self) -> int:
        """Non-padding tokens (source and target), for throughput logging."""
        n = int(self.attention_mask.sum())
        return n if self.kind == "causal" else n + int((self.labels != IGNORE).sum())


def padded_cost(rows: list[Encoded], kind: str) -> int:
    """Tokens a pass of `rows` computes once padded: rows x width (seq2seq: encoder + decoder)."""
    if kind == "causal":
        return len(rows) * max(len(e.source) + len(e.target) for e in rows)
    return len(rows) * (max(len(e.source) for e in rows) + max(len(e.target) for e in rows))


def plan_passes(rows: list[Encoded], kind: str, max_tokens: int | None) -> list[list[Encoded]]:
    """Cut a step's rows into forward passes: by task (label rows first), and within a task into
    runs of similar length whose padded cost stays within `max_tokens` (a row longer than the
    budget gets a pass of its own). Every row lands in exactly one pass."""
    passes: list[list[Encoded]] = []
    for task in sorted({e.task_id for e in rows}):
        group = [e for e in rows if e.task_id == task]
        if max_tokens is None:
            passes.append(group)
            continue
        group.sort(key=lambda e: (len(e.source) + len(e.target), len(e.target)), reverse=True)
        current: list[Encoded] = []
        for e in group:
            if current and padded_cost(current + [e], kind) > max_tokens:
                passes.append(current)
                current = []
            current.append(e)
        passes.append(current)
    return passes


@dataclass(frozen=True)
class StepCounts:
    """Loss normalisers of one optimizer step: target tokens per task and label rows, counted over
    every micro-batch on every process (every rank derives them from the same step plan)."""

    n_label_tokens: int
    n_rationale_tokens: int
    n_label_rows: int
    n_examples: int
    # kd.on_policy steps: the student's sampled target tokens per task (their KD term's normalisers)
    n_sampled_label_tokens: int = 0
    n_sampled_rationale_tokens: int = 0


def step_counts(examples: list[list[Encoded]]) -> StepCounts:
    rows = [e for ex in examples for e in ex]
    return StepCounts(  # target tokens counted with their rows' weights (1 unless several rationales)
        sum(len(e.target) * e.weight for e in rows if e.task_id == LABEL_TASK),
        sum(len(e.target) * e.weight for e in rows if e.task_id == RATIONALE_TASK),
        sum(1 for e in rows if e.task_id == LABEL_TASK),
        len(examples),
    )


@dataclass
class RankStep:
    """What one process runs for one optimizer step: per micro-batch, its passes (`real` False for a
    padding pass whose loss weight is zero), so that every process runs the same number of passes."""

    micro: list[list[tuple[Batch, bool]]]
    counts: StepCounts  # of the whole step, all processes
    n_examples: int  # examples of this process
    n_tokens: int  # non-padding tokens of this process's real passes

    def pin_memory(self) -> RankStep:
        """This step with every batch's tensors in pinned host memory, so that copies to the GPU
        can be asynchronous (DataLoader's pin_memory calls it; a batch used twice, such as the
        filler of zero-weight passes, is pinned once)."""
        pinned: dict[int, Batch] = {}

        def one(batch: Batch) -> Batch:
            if id(batch) not in pinned:
                pinned[id(batch)] = batch.map_tensors(torch.Tensor.pin_memory)
            return pinned[id(batch)]

        micro = [[(one(batch), real) for batch, real in passes] for passes in self.micro]
        return dataclasses.replace(self, micro=micro)


def shard_step(
    micro_batches: list[list[list[Encoded]]],
    rank: int,
    world: int,
    pad_id: int,
    kind: str,
    max_tokens: int | None,
    split: bool = True,
    pack_tokens: int | None = None,
) -> RankStep:
    """This process's share of an optimizer step. Each micro-batch's examples are dealt to the
    processes in turn (example i to process i % world); the pass plan of every process is derived
    here on every process, and each pads its list to the longest with zero-weight passes. With
    `pack_tokens` a causal student's passes are packed (each process packs its own rows)."""
    micro: list[list[tuple[Batch, bool]]] = []
    n_examples = n_tokens = 0
    for examples in micro_batches:
        plans = []
        for r in range(world):
            rows = [e for ex in examples[r::world] for e in ex]
            plans.append(plan_passes(rows, kind, max_tokens) if split and rows else ([rows] if rows else []))
        mine = [collate([[e] for e in g], pad_id, kind, pack_tokens) for g in plans[rank]]
        n_examples += len(examples[rank::world])
        n_tokens += sum(b.n_tokens for b in mine)
        n_pass = max(len(p) for p in plans)
        # A padding pass: one real row of the step, weighted zero (its gradients are exact zeros, but
        # every parameter takes part, so DDP/FSDP issue the same collectives on every process).
        filler = mine[0] if mine else collate([[examples[0][0]]], pad_id, kind, pack_tokens)
        micro.append([(b, True) for b in mine] + [(filler, False)] * (n_pass - len(mine)))
    counts = step_counts([ex for examples in micro_batches for ex in examples])
    return RankStep(micro, counts, n_examples, n_tokens)


def pad_rows(rows: list[list[int]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of token rows padded to the longest; `left` pads before the tokens, so
    decoder-only rows end together (generation, ranking)."""
    return _pad(rows, pad_id, left), _pad([[1] * len(r) for r in rows], 0, left)


def _pad(rows: list[list[int]], value: int, left: bool = False) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor(
        [[value] * (width - len(r)) + r if left else r + [value] * (width - len(r)) for r in rows],
        dtype=torch.long,
    )


def collate(examples: list[list[Encoded]], pad_id: int, kind: str, pack_tokens: int | None = None) -> Batch:
    """One batch from whole examples (all their rows), right-padded to the longest row; a causal
    student's rows with `pack_tokens` are packed into buffers of that many tokens instead."""
    rows = [e for ex in examples for e in ex]
    task_ids = torch.tensor([e.task_id for e in rows], dtype=torch.long)
    keys = [e.key for e in rows] if all(e.key is not None for e in rows) else None
    weights = torch.tensor([e.weight for e in rows]) if any(e.weight != 1.0 for e in rows) else None
    if kind == "causal" and pack_tokens:
        tasks = [e.task_id for e in rows]
        ids, mask, labels, packed = pack(
            [e.source for e in rows], [e.target for e in rows], tasks, pad_id, pack_tokens
        )
        return Batch(ids, mask, labels, task_ids, len(examples), kind, keys, packed, row_weights=weights)
    if kind == "causal":
        ids = [e.source + e.target for e in rows]
        labels = [[IGNORE] * len(e.source) + e.target for e in rows]
    else:
        ids = [e.source for e in rows]
        labels = [e.target for e in rows]
    mask = [[1] * len(r) for r in ids]
    return Batch(_pad(ids, pad_id), _pad(mask, 0), _pad(labels, IGNORE), task_ids, len(examples), kind, keys,
                 row_weights=weights)  # fmt: skip


class StepStream:
    """Optimizer step s of the whole run for one process, computed from (seed, s) alone.

    An epoch is planned in optimizer steps of batch_size * grad_accum examples (so batch 8 x
    accumulation 2 trains on exactly the steps of batch 16), each cut into micro-batches of
    batch_size, each dealt out to the processes. `one_pass` keeps a process's rows of a
    micro-batch in one pass (the soft-target term needs that)."""

    def __init__(self, encoded, tc: TrainConfig, pad_id: int, kind: str, rank: int = 0, world: int = 1,
                 one_pass: bool = False):  # fmt: skip
        self.encoded, self.tc, self.pad_id, self.kind = encoded, tc, pad_id, kind
        self.rank, self.world, self.one_pass = rank, world, one_pass
        self.lengths = [example_length(e) for e in encoded]
        self.step_size = tc.batch_size * tc.grad_accum
        self.per_epoch = math.ceil(len(encoded) / self.step_size)  # optimizer steps per epoch
        self._plan: tuple[int, list[list[int]]] | None = None

    def _ids(self, step: int) -> list[int]:
        epoch, index = divmod(step, self.per_epoch)
        plan = self._plan  # one read: another thread may replace the cached epoch meanwhile
        if plan is None or plan[0] != epoch:
            tc = self.tc
            plan = (epoch, plan_epoch(self.lengths, self.step_size, tc.seed, epoch, tc.group_by_length))
            self._plan = plan
        return plan[1][index]

    def rows(self, step: int) -> list[tuple[int, int]]:
        """(source tokens, target tokens) of every row of step `step` on all processes (FLOP accounting)."""
        return [(len(e.source), len(e.target)) for i in self._ids(step) for e in self.encoded[i]]

    def __getitem__(self, step: int) -> RankStep:
        ids = self._ids(step)
        b = self.tc.batch_size
        micro = [[self.encoded[i] for i in ids[k : k + b]] for k in range(0, len(ids), b)]
        return shard_step(
            micro, self.rank, self.world, self.pad_id, self.kind, self.tc.max_tokens_per_pass,
            split=not self.one_pass,
            pack_tokens=self.tc.pack_tokens if self.tc.packing and not self.one_pass else None,
        )  # fmt: skip


class StepBatches(torch.utils.data.Dataset):
    """Steps `steps` of a StepStream as a dataset for DataLoader: item i is (this process's passes
    of step steps[i], that step's FLOPs as `flops` counts them from its (source, target) lengths)."""

    def __init__(self, stream: StepStream, steps: range, flops: Callable[[list[tuple[int, int]]], int]):
        self.stream, self.steps, self.flops = stream, steps, flops

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> tuple[RankStep, int]:
        step = self.steps[i]
        return self.stream[step], self.flops(self.stream.rows(step))


def _as_is(item: Any) -> Any:
    return item


def step_loader(stream: StepStream, steps: range, flops: Callable[[list[tuple[int, int]]], int], ahead: int,
                pin: bool) -> torch.utils.data.DataLoader:  # fmt: skip
    """The steps in order from a DataLoader: with `ahead` > 0 one worker process collates up to that
    many steps ahead while the current one trains (train.prefetch_steps), and `pin` puts them in
    pinned memory (CUDA). Every step is a pure function of (seed, step), so the batches, and the
    run, are the same whatever `ahead` is and wherever a resumed run starts."""
    return torch.utils.data.DataLoader(
        StepBatches(stream, steps, flops), batch_size=None, shuffle=False, collate_fn=_as_is,
        num_workers=1 if ahead else 0, prefetch_factor=ahead or None, pin_memory=pin,
    )  # fmt: skip

"""`fit`: the training loop of one run, called by the train command (stepdistill/train.py).

Exact resume: the data order is a function of (seed, epoch) and dropout is re-seeded from
(seed, micro-step, rank) before every micro-batch, so a run resumed from step N repeats the losses,
weights and metrics of an uninterrupted run bit for bit (on the same machine and precision).

Several processes (`torchrun --nproc_per_node N -m stepdistill.cli train CONFIG`, or `accelerate
launch`): an optimizer step is the same batch_size * grad_accum examples whatever N is; each
process takes every N-th example of each micro-batch, every process derives the pass plan of all of
them (and pads its own with zero-weight passes to the longest), the loss is normalised by the counts
of the whole step, and gradients are all-reduced once per optimizer step. Only the main process
writes files, between barriers. Without dropout, 1 and N processes give the same weights up to
float summation order.

Where the parts live: the step's batches (training/batching.py StepStream), the objective and the
α mixing (training/step.py), the student's samples on a kd.on_policy step (kd/on_policy.py, reached
through the KD term fit is given), model selection and validation loss (training/selection.py), stop
signals (training/preempt.py), checkpoints (training/checkpoint.py, training/distributed.py), the
log (training/train_log.py). A DataLoader worker collates the next steps while the current one
trains (train.prefetch_steps; pinned memory on CUDA).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from stepdistill.errors import ConfigError
from stepdistill.schema import Annotation
from stepdistill.tasks.base import Task
from stepdistill.training import checkpoint as ckpt
from stepdistill.training import distributed as dist
from stepdistill.training import integrity, preempt, selection
from stepdistill.training.batching import RankStep, StepCounts, StepStream, encode_examples, step_loader
from stepdistill.training.config import StudentConfig, TrainConfig
from stepdistill.training.device import autocast, gather_objects, make_adamw
from stepdistill.training.flops import FlopModel
from stepdistill.training.formatting import build_pairs
from stepdistill.training.models import Student, freeze_embeddings, load_saved_student, load_student
from stepdistill.training.rationales import token_counter
from stepdistill.training.schedule import alpha_at, eval_steps, patience_exhausted
from stepdistill.training.step import NO_WEIGHT, Objective, Weights, loss_terms, step_weights
from stepdistill.training.train_log import TrainLog

Validate = Callable[[Student], dict[str, Any]]  # student -> valid_accuracy, valid_n, valid_correct
# (accelerator, objective, this process's step, step index, metrics totals) -> (the step with the
# student's samples added, the FLOPs they cost): a kd.on_policy term's `sample_step`.
SampleStep = Callable[[Any, Any, RankStep, int, dict[str, Any]], tuple[RankStep, int]]


def fit(
    accelerator,
    run_dir: Path,
    student_cfg: StudentConfig,
    tc: TrainConfig,
    task: Task,
    splits: dict[str, list[Annotation]],
    validate: Validate,
    last: Path | None = None,
    make_kd: Callable[[Student, torch.device], Any] | None = None,
    name: str = "run",
    eval_batch_size: int = 32,
) -> dict[str, Any]:
    """Train on splits['train'] from scratch or from checkpoint `last`, validate every
    eval_every steps on splits['valid'] (`validate` gives the accuracy, the loss is the objective's),
    keep checkpoints and best.json in `run_dir`; returns the run's final state (best_step, ...).
    `make_kd(student, device)` builds the soft-target term of a kd: section (training never imports
    stepdistill.kd; the train command passes it), a kd.on_policy term with a `sample_step`
    (SampleStep) that adds the student's samples to a step; `eval_batch_size` rows per
    validation-loss pass."""
    main, world = accelerator.is_main_process, accelerator.num_processes
    student, formatted, stream, total_steps = _prepare(student_cfg, tc, task, splits["train"], last,
                                                       accelerator, one_pass=make_kd is not None)  # fmt: skip
    kd_term = make_kd(student, accelerator.device) if make_kd is not None else None
    # kd.on_policy (kd/on_policy.py): the term's sampler lets the student write the KD rows of a step
    sample_step: SampleStep | None = getattr(kd_term, "sample_step", None)
    objective = Objective(student.model, student.kind, kd_term, tc.loss_chunk_tokens)
    has_valid = bool(splits.get("valid"))
    valid = _encode(student, tc, task, splits.get("valid", []))
    flop_model = FlopModel.from_model(student.model, student.kind)  # learning curves against compute
    optimizer = make_adamw(_param_groups(objective, tc.weight_decay), tc.lr, accelerator.device)
    scheduler = _scheduler(optimizer, tc, total_steps)
    objective, optimizer = accelerator.prepare(objective, optimizer)
    keys = accelerator.unwrap_model(objective).sum_keys()
    state: dict[str, Any] = {"step": 0, "best_step": None, "best_valid_accuracy": None, "elapsed_s": 0.0,
                             "examples_seen": 0, "tokens_seen": 0}  # fmt: skip
    if last is not None:
        dist.restore_optimizer(accelerator, last, objective, optimizer, scheduler)
        state = ckpt.read_state(last)
    state["num_processes"] = world
    log = TrainLog(run_dir, main, state["step"] if last is not None else None)
    if main:
        print(f"[train] {name}: {world} process(es); an optimizer step takes {stream.step_size} "
              f"examples, {tc.batch_size // world} per process per micro-batch", flush=True)  # fmt: skip
    bar = tqdm(total=total_steps, initial=state["step"], desc=name, disable=None if main else True)
    window, clock = Window(), time.perf_counter() - state["elapsed_s"]
    mine = 0  # examples this process trained on in this launch
    eval_at = set(eval_steps(tc, total_steps))  # every eval_every steps, or geometric
    fsdp = dist.is_fsdp(accelerator)
    steps = range(state["step"], total_steps)
    pin = accelerator.device.type == "cuda"  # page-locked batches: asynchronous copies to the GPU
    batches = step_loader(stream, steps, flop_model.train_flops, tc.prefetch_steps, pin)
    for step, (plan, step_flops) in zip(steps, batches):  # this process's passes of the step, its FLOPs
        # loss = alpha * L_label + (1 - alpha) * L_rationale, each a token mean over the whole
        # step, with (1 - w) * CE_t + w * KD_t for each KD task t: the weights of each token
        # come from the counts of the whole step (all micro-batches, all processes).
        alpha = alpha_at(tc, step, total_steps)
        if sample_step is not None:  # kd.on_policy: the student writes the KD rows of this step
            totals = state.setdefault("on_policy", {})  # metrics.json train.on_policy
            plan, sample_flops = sample_step(accelerator, objective, plan, step, totals)
            step_flops += sample_flops  # sampling and the sampled rows' training
        weights = step_weights(tc.method, alpha, plan.counts, scale=world)
        objective.train()
        sums = _forward_backward(accelerator, objective, plan, weights, keys, tc.seed, step * tc.grad_accum)
        if tc.max_grad_norm:
            accelerator.clip_grad_norm_(objective.parameters(), tc.max_grad_norm)
        optimizer.step()
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        done = step + 1
        window.add(sums, plan, alpha)
        mine += plan.n_examples
        state.update(step=done, elapsed_s=time.perf_counter() - clock,
                     train_flops=state.get("train_flops", 0) + step_flops)  # fmt: skip
        bar.update(1)
        is_eval = done in eval_at
        stop = preempt.stop_requested(accelerator)  # SIGTERM/SIGINT: checkpoint here, then exit
        is_save = is_eval or (tc.save_every is not None and done % tc.save_every == 0) or stop
        if done % tc.log_every == 0 or is_save:  # checkpoints end a log window: resume logs alike
            terms = _log_window(
                accelerator, window, keys, tc, kd_term, state, log, done / stream.per_epoch, lr
            )
            bar.set_postfix(loss=f"{terms.get('loss', 0):.4f}")
            window = Window()
        if is_eval and not fsdp:
            _validate(student, objective, accelerator, validate, has_valid, valid, tc, alpha, state, log,
                      eval_batch_size)  # fmt: skip
        if is_save:
            _checkpoint(accelerator, run_dir, student, objective, optimizer, scheduler, state,
                        is_eval and not fsdp, tc)  # fmt: skip
        if is_eval and fsdp:  # sharded weights cannot generate: validate the checkpoint just written
            saved = load_saved_student(ckpt.checkpoints_dir(run_dir) / f"step-{done}", kind=student.kind)
            saved.model.to(accelerator.device)
            _validate(saved, objective, accelerator, validate, has_valid, valid, tc, alpha, state, log,
                      eval_batch_size)  # fmt: skip
            dist.record_best(accelerator, run_dir, state, tc)
        if stop:
            raise preempt.Preempted(preempt.stopped_message(done, total_steps))
        if is_eval and patience_exhausted(tc, state.get("evals_since_best", 0)):
            state["stopped_early"] = True
            if main:
                print(f"[train] {name}: no better validation accuracy in {tc.patience} evaluations; "
                      f"stopping at step {done} of {total_steps}", flush=True)  # fmt: skip
            break
    bar.close()
    log.close()
    state["examples_per_process"] = gather_objects([mine])  # this launch (a resume counts anew)
    state["train_examples"], state["train_counts"] = len(formatted.examples), formatted.counts()
    return state


def _prepare(student_cfg: StudentConfig, tc: TrainConfig, task: Task, train_rows: list[Annotation],
             last: Path | None, accelerator, one_pass: bool):  # fmt: skip
    """Student (on the device), training pairs, the step stream and the step budget."""
    torch.manual_seed(tc.seed)
    student = (
        ckpt.restore_student(student_cfg, last, tc.seed) if last else load_student(student_cfg, seed=tc.seed)
    )
    student.model.to(accelerator.device)
    if tc.freeze_embeddings:
        freeze_embeddings(student.model)
    formatted = build_pairs(task, train_rows, tc, token_counter(student.tokenizer))
    if not formatted.examples:
        reasons = ", ".join(f"{n} {r}" for r, n in formatted.skipped.items()) or "no rows"
        raise ConfigError(f"train.method={tc.method}: no usable training example ({reasons})")
    # Example ids travel with the rows: precomputed teacher targets are looked up by them.
    encoded = encode_examples(student.tokenizer, formatted.examples, tc, student.kind, formatted.ids)
    rank, world = accelerator.process_index, accelerator.num_processes
    stream = StepStream(encoded, tc, student.tokenizer.pad_token_id, student.kind, rank, world, one_pass)
    total = tc.max_steps or max(1, math.ceil(tc.epochs * stream.per_epoch))
    return student, formatted, stream, total


def _encode(student: Student, tc: TrainConfig, task: Task, rows: list[Annotation]):
    """The training pairs of `rows` (the valid split), tokenised once for every validation loss."""
    formatted = build_pairs(task, rows, tc, token_counter(student.tokenizer))
    return encode_examples(student.tokenizer, formatted.examples, tc, student.kind, formatted.ids)


def _param_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and norm scales (1-D tensors), the usual AdamW practice."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _scheduler(optimizer, tc: TrainConfig, total_steps: int):
    from transformers import get_scheduler

    name = "constant_with_warmup" if tc.schedule == "constant" else tc.schedule
    warmup = round(tc.warmup_ratio * total_steps)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def _micro_seed(seed: int, micro_step: int, rank: int = 0) -> int:
    # Distinct, reproducible torch seed per micro-step and process: dropout depends on these only.
    return (seed * 1_000_003 + micro_step + rank * 7_919_993) % (2**63 - 1)


def _forward_backward(accelerator, objective, plan: RankStep, weights: Weights, keys: list[str], seed: int,
                      first_micro: int) -> torch.Tensor:  # fmt: skip
    """Forward and backward of every pass of one optimizer step on this process (micro-batch k is
    micro-step first_micro + k); gradients are all-reduced by the last backward only. Returns this
    process's loss sums [len(keys)]."""
    sums = torch.zeros(len(keys), device=accelerator.device)
    passes = [(k, batch, real) for k, micro in enumerate(plan.micro) for batch, real in micro]
    for i, (k, batch, real) in enumerate(passes):
        if i == 0 or passes[i - 1][0] != k:
            torch.manual_seed(_micro_seed(seed, first_micro + k, accelerator.process_index))
        last = i == len(passes) - 1
        with nullcontext() if last else accelerator.no_sync(objective):
            with accelerator.autocast():
                out = objective(
                    batch.to(accelerator.device, non_blocking=True), weights if real else NO_WEIGHT
                )
            accelerator.backward(out.total)
        if real:
            sums += torch.stack([out.sums[key].float() for key in keys])
    return sums


@dataclass
class Window:
    """Per-step loss sums (this process's share) since the last log row; reduced when logged."""

    sums: list[torch.Tensor] = field(default_factory=list)  # per step: [len(keys)]
    counts: list[StepCounts] = field(default_factory=list)
    alphas: list[float] = field(default_factory=list)  # per step (train.alpha_schedule)
    tokens: int = 0  # this process's non-padding tokens
    start: float = field(default_factory=time.perf_counter)

    def add(self, sums: torch.Tensor, plan: RankStep, alpha: float) -> None:
        self.sums.append(sums)
        self.counts.append(plan.counts)
        self.alphas.append(alpha)
        self.tokens += plan.n_tokens

    @property
    def examples(self) -> int:
        return sum(c.n_examples for c in self.counts)

    def reduce(self, accelerator, keys: list[str], method: str, kd) -> tuple[dict[str, float], int]:
        """Mean over the window's steps of each logged term (summed over processes), and the tokens
        of all processes. One collective for the whole window."""
        local = torch.cat([torch.stack(self.sums).double().flatten(), torch.tensor([float(self.tokens)])])
        local = local.to(accelerator.device, torch.float64)
        total = accelerator.reduce(local, reduction="sum") if accelerator.num_processes > 1 else local
        *flat, tokens = total.cpu().tolist()
        width = len(keys)
        terms: dict[str, float] = {}
        for i, counts in enumerate(self.counts):
            sums = dict(zip(keys, flat[i * width : (i + 1) * width]))
            step = loss_terms(sums, counts, method, self.alphas[i], accelerator.num_processes, kd)
            for key, value in step.items():
                terms[key] = terms.get(key, 0.0) + value / len(self.counts)
        return terms, int(tokens)


def _log_window(accelerator, window: Window, keys: list[str], tc: TrainConfig, kd_term, state: dict[str, Any],
                log: TrainLog, epoch: float, lr: float) -> dict[str, float]:  # fmt: skip
    """Write the log row of the steps since the last one; returns its loss terms."""
    terms, tokens = window.reduce(accelerator, keys, tc.method, kd_term)
    state["tokens_seen"] += tokens
    state["examples_seen"] += window.examples
    secs = max(time.perf_counter() - window.start, 1e-9)
    log.write({"step": state["step"], "epoch": round(epoch, 4), **terms, "lr": lr, "tokens_per_s": tokens / secs,
               "examples_per_s": window.examples / secs, "elapsed_s": state["elapsed_s"]})  # fmt: skip
    if kd_term is not None and "kd_loss" in terms:  # warns once when the KD term is negligible
        w = kd_term.cfg.weight
        kd_term.monitor.observe(
            {"ce_weighted": (1 - w) * terms["kd_ce_loss"], "kd_weighted": w * terms["kd_loss"]}
        )
    return terms


def _validate(student: Student, objective, accelerator, validate: Validate, has_rows: bool, valid,
              tc: TrainConfig, alpha: float, state: dict[str, Any], log: TrainLog, batch_size: int) -> None:  # fmt: skip
    """Validation accuracy (the caller's `validate`, when the valid split has rows) and loss (this
    step's objective on `valid`, the split's training pairs, when there are any) of `student`;
    updates the best step and the patience count in `state` and logs the row."""
    if not has_rows:
        result: dict[str, Any] = {"valid_accuracy": None, "valid_n": 0}
    else:
        result = validate(student)  # against gold, whatever the training labels
    if valid:  # rows the method can train on (e.g. teacher labels: only rows the teacher annotated)
        inner = accelerator.unwrap_model(objective)
        kd = inner.kd_term.for_unseen_rows() if inner.kd_term is not None else None
        at_step = Objective(student.model, student.kind, kd, tc.loss_chunk_tokens)
        pad = student.tokenizer.pad_token_id
        with autocast(accelerator.device, tc.precision):  # the training steps' precision
            result["valid_loss"] = selection.valid_loss(at_step, valid, tc.method, alpha, pad, batch_size)
    selection.record(result, state, tc.patience_metric)
    log.write({"step": state["step"], **result, "examples_seen": state["examples_seen"],
               "train_flops": state["train_flops"]})  # fmt: skip


def _checkpoint(accelerator, run_dir: Path, student: Student, objective, optimizer, scheduler,
                state: dict[str, Any], is_eval: bool, tc: TrainConfig) -> None:  # fmt: skip
    done = state["step"]
    with integrity.disk_full_is_an_error(
        f"checkpoint step-{done}", run_dir / "checkpoints" / f".tmp-step-{done}"
    ):
        dist.save(accelerator, run_dir, student, objective, optimizer, scheduler, state, is_eval, tc)

"""Train a student: `stepdistill train CONFIG [--resume] [--section.key value ...]`.

    from stepdistill.config import load_config
    from stepdistill.train import train
    run_dir = train(load_config("configs/demo.yaml"))

Everything a run writes lands in runs/<name>/: config.yaml, train_log.jsonl, tb/ (TensorBoard),
checkpoints/step-<N>/ (+ best.json), best/ (the selected student, plain from_pretrained),
metrics.json and predictions/<split>.jsonl. Model selection uses the valid split only.

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

Speed without changing results: the next steps are collated on a background thread while the current
one trains (train.prefetch_steps; pinned memory and asynchronous copies on CUDA, training/prefetch.py),
loss sums stay on the device until a log row is written, processes compare stop flags only every few
steps (`stop_vote_due`), AdamW is fused on CUDA (training/device.py), and train.compile runs the
student's stacks under torch.compile (training/compile.py).
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

from stepdistill.config import Config, save_config
from stepdistill.data.io import iter_jsonl, write_json, write_jsonl
from stepdistill.errors import ConfigError
from stepdistill.evaluate import base_metrics, evaluate_splits, predict_labels, score
from stepdistill.schema import Annotation
from stepdistill.tasks.base import Task
from stepdistill.training import checkpoint as ckpt
from stepdistill.training import distributed as dist
from stepdistill.training import integrity, preempt, selection
from stepdistill.training.batching import (
    RankStep,
    StepCounts,
    encode_examples,
    example_length,
    plan_epoch,
    shard_step,
)
from stepdistill.training.compile import Compiled, warm_up
from stepdistill.training.config import TrainConfig
from stepdistill.training.device import device_of, gather_objects, make_accelerator, make_adamw
from stepdistill.training.flops import FlopModel
from stepdistill.training.formatting import build_pairs
from stepdistill.training.models import Student, load_saved_student, load_student
from stepdistill.training.prefetch import Prefetcher, pin, to_device
from stepdistill.training.rationales import token_counter
from stepdistill.training.resume_check import check_resume, model_default
from stepdistill.training.schedule import alpha_at, eval_steps, patience_exhausted
from stepdistill.training.step import NO_WEIGHT, Objective, loss_terms, run_pass, step_weights


def _micro_seed(seed: int, micro_step: int, rank: int = 0) -> int:
    # Distinct, reproducible torch seed per micro-step and process: dropout depends on these only.
    return (seed * 1_000_003 + micro_step + rank * 7_919_993) % (2**63 - 1)


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

    def reduce(self, accelerator, keys: list[str], tc: TrainConfig, kd) -> tuple[dict[str, float], int]:
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
            step = loss_terms(sums, counts, tc.method, self.alphas[i], accelerator.num_processes, kd)
            for key, value in step.items():
                terms[key] = terms.get(key, 0.0) + value / len(self.counts)
        return terms, int(tokens)

    def row(self, terms: dict[str, float], tokens: int, step: int, epoch: float, lr: float,
            elapsed: float) -> dict[str, Any]:  # fmt: skip
        secs = max(time.perf_counter() - self.start, 1e-9)
        row: dict[str, Any] = {"step": step, "epoch": round(epoch, 4), **terms}
        row.update(lr=lr, tokens_per_s=tokens / secs, examples_per_s=self.examples / secs, elapsed_s=elapsed)
        return row


def _check_run_dir(run_dir: Path, resume: bool) -> Path | None:
    last = ckpt.latest_checkpoint(run_dir)
    if resume and last is None:
        raise ConfigError(f"--resume: {run_dir} has no checkpoint to resume from")
    if not resume and last is not None:
        raise ConfigError(
            f"{run_dir} already holds checkpoints: pass --resume to continue, or choose another --name"
        )
    return last if resume else None


def _select(student: Student, task: Task, splits, cfg: Config, state: dict[str, Any]) -> dict[str, Any]:
    """Validation accuracy of the current student; updates the best step in `state`."""
    valid = splits.get("valid", [])
    if not valid:
        result = {"valid_accuracy": None, "valid_n": 0}
    else:
        predictions = predict_labels(student, task, valid, cfg.train, cfg.eval)
        scores = score(task, predictions)
        loss = selection.valid_loss(student, task, valid, cfg)  # breaks ties in accuracy
        result = {"valid_accuracy": scores["accuracy"], "valid_n": scores["n"], "valid_loss": loss,
                  "valid_correct": selection.outcome_bits(predictions)}  # fmt: skip
    # train.patience counts evaluations in a row without an improvement (selection.improved; a tie
    # won on validation loss changes best/, not the count); best_valid_accuracy is the best so far.
    if result["valid_accuracy"] is not None:
        improved = selection.improved(result, state, cfg.train.patience_metric)
        state["evals_since_best"] = 0 if improved else state.get("evals_since_best", 0) + 1
        if result.get("valid_loss") is not None:
            state["min_valid_loss"] = min(result["valid_loss"], state.get("min_valid_loss") or float("inf"))
    if selection.is_better(result, state):
        state.update(
            best_step=state["step"],
            best_valid_accuracy=result["valid_accuracy"],
            best_valid_loss=result.get("valid_loss"),
        )
    return result


def _prepare(cfg: Config, task: Task, train_rows: list[Annotation], last: Path | None, rank: int, world: int):
    """Student, encoded data and the step budget (restored from `last` when resuming)."""
    tc = cfg.train
    if cfg.kd is not None and tc.max_tokens_per_pass is not None:
        raise ConfigError(
            "train.max_tokens_per_pass: not available with a kd: section (the soft-target term runs "
            "on the whole step in one pass); remove one of them"
        )
    torch.manual_seed(tc.seed)
    student = (
        ckpt.restore_student(cfg.student, last, tc.seed) if last else load_student(cfg.student, seed=tc.seed)
    )
    formatted = build_pairs(task, train_rows, tc, token_counter(student.tokenizer))
    if not formatted.examples:
        reasons = ", ".join(f"{n} {r}" for r, n in formatted.skipped.items()) or "no rows"
        raise ConfigError(f"train.method={tc.method}: no usable training example ({reasons})")
    # Example ids travel with the rows: precomputed teacher targets are looked up by them.
    encoded = encode_examples(student.tokenizer, formatted.examples, tc, student.kind, formatted.ids)
    stream = StepStream(
        encoded, tc, student.tokenizer.pad_token_id, student.kind, rank, world, one_pass=cfg.kd is not None
    )
    total = tc.max_steps or max(1, math.ceil(tc.epochs * stream.per_epoch))
    return student, formatted, stream, total


def _train_step(accelerator, objective, plan: RankStep, tc: TrainConfig, step: int, keys: list[str],
                alpha: float | None = None):  # fmt: skip
    """Forward and backward of every pass of one optimizer step on this process; gradients are
    all-reduced by the last backward only. Returns this process's loss sums [len(keys)]."""
    alpha = tc.alpha if alpha is None else alpha  # train.alpha_schedule passes this step's value
    weights = step_weights(tc.method, alpha, plan.counts, scale=accelerator.num_processes)
    sums = torch.zeros(len(keys), device=accelerator.device)
    passes = [(k, batch, real) for k, micro in enumerate(plan.micro) for batch, real in micro]
    for i, (k, batch, real) in enumerate(passes):
        if i == 0 or passes[i - 1][0] != k:
            torch.manual_seed(_micro_seed(tc.seed, step * tc.grad_accum + k, accelerator.process_index))
        last = i == len(passes) - 1
        with nullcontext() if last else accelerator.no_sync(objective):
            with accelerator.autocast():
                out = run_pass(
                    objective, to_device(batch, accelerator.device), weights if real else NO_WEIGHT
                )
            accelerator.backward(out.total)
        if real:
            sums += torch.stack([out.sums[key].float() for key in keys])
    return sums


# Steps between comparisons of the stop flags of several processes at most: the all-reduce makes
# the host wait for the device, so it is not done every step; a stop then waits at most this long.
STOP_VOTE_EVERY = 10


def stop_vote_due(done: int, tc: TrainConfig, total_steps: int, eval_at: set[int]) -> bool:
    """Whether the processes compare stop flags after optimizer step `done`: at every log, evaluation
    and save boundary, every STOP_VOTE_EVERY steps and after the last step. Every process derives it
    from the same numbers, so all of them take part in the same votes."""
    return (
        done % tc.log_every == 0
        or done % STOP_VOTE_EVERY == 0
        or done in eval_at
        or (tc.save_every is not None and done % tc.save_every == 0)
        or done == total_steps
    )


def _stop_requested(accelerator, vote: bool = True) -> bool:
    """Whether any process received SIGTERM/SIGINT: all of them stop at the same step boundary (a
    process that stopped alone would leave the others waiting in a collective). One process reads
    its flag after every step; several compare theirs only where `vote` (see stop_vote_due)."""
    flag = preempt.requested()
    if accelerator.num_processes == 1:
        return flag
    if not vote:
        return False
    votes = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(votes, reduction="sum").item() > 0)


def _compile(accelerator, objective, stream: StepStream, tc: TrainConfig, state: dict[str, Any],
             total_steps: int, keys: list[str]) -> Compiled | None:  # fmt: skip
    """train.compile: compile the student's stacks on the first step of this launch (training/compile.py);
    the stacks to run inside training steps, or None when compilation failed or overran its limit."""
    inner = accelerator.unwrap_model(objective)  # no DDP hooks: the warm-up synchronises nothing
    compiled = Compiled(inner.base, inner.kind)
    step = state["step"]
    inner.train()  # the mode is part of what is compiled: the same as the steps'

    def run() -> None:
        _train_step(accelerator, inner, stream[step], tc, step, keys, alpha_at(tc, step, total_steps))

    report = warm_up(compiled, run, tc.compile_timeout_s)
    for param in inner.parameters():  # the warm-up's gradients are not part of the step
        param.grad = None
    state.update(compile_s=state.get("compile_s", 0.0) + report.seconds, compiled=report.compiled,
                 compile_fallback=report.fallback)  # fmt: skip
    return compiled if report.compiled else None


def fit(
    cfg: Config,
    task: Task,
    splits: dict[str, list[Annotation]],
    resume: bool = False,
    allow_config_change: bool = False,
    make_kd: Callable[[Student, torch.device], Any] | None = None,
) -> Path:
    """Train on splits['train'], select on splits['valid'], evaluate cfg.eval.splits; the run folder.
    `make_kd(student, device)` builds the soft-target term of a config with a `kd:` section
    (stepdistill.train passes it: the training package itself never imports stepdistill.kd)."""
    if cfg.kd is not None and make_kd is None:
        raise ConfigError("kd: this config has a kd: section; train it with stepdistill.train.train")
    from torch.utils.tensorboard import SummaryWriter

    run_dir, tc = cfg.run_dir, cfg.train
    accelerator = make_accelerator(tc.precision, tc.dist_timeout_s)
    main, world = accelerator.is_main_process, accelerator.num_processes
    dist.check_launch(cfg, accelerator)
    last = _check_run_dir(run_dir, resume)
    if last is not None:  # refuses a changed config unless the change cannot alter the result
        check_resume(
            run_dir / "config.yaml",
            cfg.model_dump(mode="json"),
            allow_config_change,
            write=main,
            default=model_default(cfg),
        )
    accelerator.wait_for_everyone()  # every process has read the folder before the main one writes
    if main:
        save_config(cfg, run_dir / "config.yaml")
    rank = accelerator.process_index
    student, formatted, stream, total_steps = _prepare(cfg, task, splits["train"], last, rank, world)
    student.model.to(accelerator.device)
    kd_term = make_kd(student, accelerator.device) if make_kd is not None else None
    objective = Objective(student.model, student.kind, tc.method, tc.alpha, kd_term, tc.loss_chunk_tokens)
    flop_model = FlopModel.from_model(student.model, student.kind)  # learning curves against compute
    optimizer = make_adamw(_param_groups(objective, tc.weight_decay), tc.lr, accelerator.device)
    scheduler = _scheduler(optimizer, tc, total_steps)
    objective, optimizer = accelerator.prepare(objective, optimizer)
    keys = Objective.sum_keys(accelerator.unwrap_model(objective))
    fsdp = dist.is_fsdp(accelerator)
    state: dict[str, Any] = {"step": 0, "best_step": None, "best_valid_accuracy": None, "elapsed_s": 0.0,
                             "examples_seen": 0, "tokens_seen": 0, "num_processes": world}  # fmt: skip
    log_rows: list[dict[str, Any]] = []
    if last is not None:
        dist.restore_optimizer(accelerator, last, objective, optimizer, scheduler)
        state = {**ckpt.read_state(last), "num_processes": world}
        log_path = run_dir / "train_log.jsonl"
        log_rows = (
            [r for _, r in iter_jsonl(log_path) if r["step"] <= state["step"]] if log_path.exists() else []
        )
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=state["step"] if last else None) if main else None
    if main:
        print(f"[train] {cfg.name}: {world} process(es); an optimizer step takes {stream.step_size} "
              f"examples, {tc.batch_size // world} per process per micro-batch", flush=True)  # fmt: skip

    def log(row: dict[str, Any]) -> None:
        log_rows.append(row)
        if not main:
            return
        write_jsonl(run_dir / "train_log.jsonl", log_rows)
        for key, value in row.items():
            if key not in ("step", "epoch") and isinstance(value, (int, float)):
                writer.add_scalar(
                    f"eval/{key}" if key.startswith("valid") else f"train/{key}", value, row["step"]
                )

    bar = tqdm(total=total_steps, initial=state["step"], desc=cfg.name, disable=None if main else True)
    compiled, state["compiled"], state["compile_fallback"] = None, False, None  # this launch's
    if tc.compile and state["step"] < total_steps:  # before the clock starts: not part of wall_s
        compiled = _compile(accelerator, objective, stream, tc, state, total_steps, keys)
    window, clock = Window(), time.perf_counter() - state["elapsed_s"]
    mine = 0  # examples this process trained on in this launch
    eval_at = set(eval_steps(tc, total_steps))  # every eval_every steps, or geometric
    pinned = accelerator.device.type == "cuda"  # page-locked batches: asynchronous copies to the GPU

    def collate(step: int) -> tuple[RankStep, int]:  # runs on the prefetch thread
        plan = stream[step]
        return (pin(plan) if pinned else plan), flop_model.train_flops(stream.rows(step))

    steps = range(state["step"], total_steps)
    with Prefetcher(collate, steps, tc.prefetch_steps) as ahead:
        for step in steps:
            objective.train()
            plan, step_flops = ahead.get(step)
            mine += plan.n_examples
            alpha = alpha_at(tc, step, total_steps)
            with compiled.active() if compiled is not None else nullcontext():
                window.add(_train_step(accelerator, objective, plan, tc, step, keys, alpha), plan, alpha)
            state["train_flops"] = state.get("train_flops", 0) + step_flops
            if tc.max_grad_norm:
                accelerator.clip_grad_norm_(objective.parameters(), tc.max_grad_norm)
            optimizer.step()
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            state.update(step=done, elapsed_s=time.perf_counter() - clock)
            bar.update(1)
            is_eval = done in eval_at
            # SIGTERM/SIGINT: checkpoint at this step boundary, then exit
            stop = _stop_requested(accelerator, stop_vote_due(done, tc, total_steps, eval_at))
            is_save = is_eval or (tc.save_every is not None and done % tc.save_every == 0) or stop
            if done % tc.log_every == 0 or is_save:
                # Checkpoints always end a log window, so a resumed run logs the same rows.
                terms, tokens = window.reduce(accelerator, keys, tc, kd_term)
                state["tokens_seen"] += tokens
                state["examples_seen"] += window.examples
                log(window.row(terms, tokens, done, done / stream.per_epoch, lr, state["elapsed_s"]))
                if kd_term is not None and "kd_loss" in terms:
                    w = kd_term.cfg.weight
                    kd_term.monitor.observe(
                        {"ce_weighted": (1 - w) * terms["kd_ce_loss"], "kd_weighted": w * terms["kd_loss"]}
                    )
                bar.set_postfix(loss=f"{terms.get('loss', 0):.4f}")
                window = Window()
            curve = {"examples_seen": state["examples_seen"], "train_flops": state["train_flops"]}
            if is_eval and not fsdp:
                log({"step": done, **_select(student, task, splits, cfg, state), **curve})
            if is_save:
                with integrity.disk_full_is_an_error(
                    f"checkpoint step-{done}", run_dir / "checkpoints" / f".tmp-step-{done}"
                ):
                    dist.save(
                        accelerator, run_dir, student, objective, optimizer, scheduler, state,
                        is_eval and not fsdp, tc,
                    )  # fmt: skip
            if is_eval and fsdp:
                # Sharded weights cannot generate: validate the checkpoint just written, as a plain model.
                saved = load_saved_student(ckpt.checkpoints_dir(run_dir) / f"step-{done}", kind=student.kind)
                saved.model.to(accelerator.device)
                log({"step": done, **_select(saved, task, splits, cfg, state), **curve})
                dist.record_best(accelerator, run_dir, state, tc)
            if stop:
                raise preempt.Preempted(
                    f"{preempt.signal_name() or 'stop signal'}: stopped at step {done} of {total_steps} with a "
                    "checkpoint; continue with `stepdistill train CONFIG --resume` (re-running `stepdistill run` "
                    "resumes it too)"
                )
            if is_eval and patience_exhausted(tc, state.get("evals_since_best", 0)):
                state["stopped_early"] = True
                if main:
                    print(f"[train] {cfg.name}: no better validation accuracy in {tc.patience} evaluations; "
                          f"stopping at step {done} of {total_steps}", flush=True)  # fmt: skip
                break
    bar.close()
    if writer is not None:
        writer.close()
    state["examples_per_process"] = gather_objects([mine])  # this launch (a resume counts anew)
    _finish(cfg, task, splits, formatted, state, run_dir, accelerator)
    return run_dir


def _finish(cfg: Config, task: Task, splits, formatted, state: dict[str, Any], run_dir: Path,
            accelerator) -> None:  # fmt: skip
    """Export the best student to best/, evaluate it (generation shared by all processes) and
    write metrics.json (main process)."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        ckpt.export_best(run_dir, state["best_step"])
        if not splits.get("valid"):
            print(f"no validation rows: best/ is the last checkpoint (step {state['best_step']})", flush=True)
    accelerator.wait_for_everyone()
    student = load_saved_student(run_dir / "best", kind=cfg.student.kind)
    student.model.to(device_of(accelerator.device))
    wanted = [s for s in cfg.eval.splits if s in splits]
    results, latency = evaluate_splits(student, task, splits, cfg, wanted, run_dir)
    wall = state["elapsed_s"]
    metrics = base_metrics(cfg, student)
    metrics.update(
        best_step=state["best_step"],
        selected_by="last checkpoint (no validation rows)"
        if not splits.get("valid")
        else "valid_accuracy, ties broken by valid_loss",
        train={
            "steps": state["step"],
            "examples": len(formatted.examples),
            **formatted.counts(),  # label_examples, rationale_examples, skipped
            "examples_seen": state["examples_seen"],
            "num_processes": accelerator.num_processes,
            "examples_per_process": state["examples_per_process"],
            "wall_s": wall,
            "tokens_per_s": state["tokens_seen"] / wall if wall else None,
            # train.compile: seconds of the compile warm-up (all launches), excluded from wall_s;
            # compiled: whether this launch trained compiled; compile_fallback: why not, if it asked.
            "compile_s": state.get("compile_s", 0.0),
            "compiled": state.get("compiled", False),
            "compile_fallback": state.get("compile_fallback"),
            "train_flops": state.get("train_flops"),  # training/flops.py: useful FLOPs, no padding
            "stopped_early": state.get("stopped_early", False),  # train.patience ended it
        },
        splits=results,
        latency=latency,
    )
    if accelerator.is_main_process:
        write_json(run_dir / "metrics.json", metrics)
    accelerator.wait_for_everyone()

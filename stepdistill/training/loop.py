"""Train a student: `stepdistill train CONFIG [--resume] [--section.key value ...]`.

    from stepdistill.config import load_config
    from stepdistill.training.loop import train
    run_dir = train(load_config("configs/demo.yaml"))

Everything a run writes lands in runs/<name>/: config.yaml, train_log.jsonl, tb/ (TensorBoard),
checkpoints/step-<N>/ (+ best.json), best/ (the selected student, plain from_pretrained),
metrics.json and predictions/<split>.jsonl. Model selection uses the valid split only.

Exact resume: the data order is a function of (seed, epoch) and dropout is re-seeded from
(seed, micro-step) before every forward pass, so a run resumed from step N repeats the losses,
weights and metrics of an uninterrupted run bit for bit (on the same machine and precision).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from stepdistill.config import Config, save_config
from stepdistill.data.io import iter_jsonl, write_json, write_jsonl
from stepdistill.data.schema import Annotation
from stepdistill.errors import ConfigError
from stepdistill.evaluate import base_metrics, evaluate_splits, predict_labels, score
from stepdistill.tasks.base import Task
from stepdistill.training import checkpoint as ckpt
from stepdistill.training.batching import collate_step, encode_examples, example_length, plan_epoch
from stepdistill.training.config import TrainConfig
from stepdistill.training.device import mixed_precision
from stepdistill.training.formatting import build_pairs
from stepdistill.training.models import Student, load_saved_student, load_student
from stepdistill.training.step import compute_loss, forward_backward


def train(cfg: Config, resume: bool = False) -> Path:
    """Load the task and splits named by `cfg`, train, evaluate; returns the run folder."""
    from stepdistill.data.splits import load_splits
    from stepdistill.tasks import get_task

    task = get_task(cfg.task)
    return fit(cfg, task, load_splits(cfg.data, task), resume=resume)


def _micro_seed(seed: int, micro_step: int) -> int:
    # Distinct, reproducible torch seed per micro-step: dropout masks depend on (seed, step) only.
    return (seed * 1_000_003 + micro_step) % (2**63 - 1)


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


class BatchStream:
    """Micro-step m of the whole run (a Step: its forward passes), computed from (seed, m) alone.
    `one_pass` keeps all rows of a step in one batch (the soft-target term needs that)."""

    def __init__(self, encoded, tc: TrainConfig, pad_id: int, kind: str, one_pass: bool = False):
        self.encoded, self.tc, self.pad_id, self.kind = encoded, tc, pad_id, kind
        self.one_pass = one_pass
        self.lengths = [example_length(e) for e in encoded]
        self.per_epoch = math.ceil(len(encoded) / tc.batch_size)
        self._plan: tuple[int, list[list[int]]] | None = None

    def __getitem__(self, micro_step: int):
        epoch, index = divmod(micro_step, self.per_epoch)
        if self._plan is None or self._plan[0] != epoch:
            tc = self.tc
            self._plan = (epoch, plan_epoch(self.lengths, tc.batch_size, tc.seed, epoch, tc.group_by_length))
        rows = [self.encoded[i] for i in self._plan[1][index]]
        return collate_step(
            rows, self.pad_id, self.kind, self.tc.max_tokens_per_pass, split=not self.one_pass
        )


@dataclass
class Window:
    """Sums over the steps since the last log row."""

    terms: dict[str, float] = field(default_factory=dict)
    micro: int = 0
    tokens: int = 0
    examples: int = 0
    start: float = field(default_factory=time.perf_counter)

    def add(self, parts, batch) -> None:
        for key, value in parts.terms.items():
            self.terms[key] = self.terms.get(key, 0.0) + float(value)
        self.micro += 1
        self.tokens += batch.n_tokens
        self.examples += batch.n_examples

    def row(self, step: int, epoch: float, lr: float, elapsed: float) -> dict[str, Any]:
        secs = max(time.perf_counter() - self.start, 1e-9)
        row = {"step": step, "epoch": round(epoch, 4)}
        row.update({k: v / max(self.micro, 1) for k, v in self.terms.items()})
        row.update(
            lr=lr, tokens_per_s=self.tokens / secs, examples_per_s=self.examples / secs, elapsed_s=elapsed
        )
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


def _validate(student: Student, task: Task, valid: list[Annotation], cfg: Config) -> dict[str, Any]:
    if not valid:
        return {"valid_accuracy": None, "valid_n": 0}
    scores = score(task, predict_labels(student, task, valid, cfg.train, cfg.eval))
    return {"valid_accuracy": scores["accuracy"], "valid_n": scores["n"]}


def _prepare(cfg: Config, task: Task, train_rows: list[Annotation], last: Path | None):
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
    formatted = build_pairs(task, train_rows, tc)
    if not formatted.examples:
        reasons = ", ".join(f"{n} {r}" for r, n in formatted.skipped.items()) or "no rows"
        raise ConfigError(f"train.method={tc.method}: no usable training example ({reasons})")
    # Example ids travel with the rows: precomputed teacher targets are looked up by them.
    encoded = encode_examples(student.tokenizer, formatted.examples, tc, student.kind, formatted.ids)
    stream = BatchStream(
        encoded, tc, student.tokenizer.pad_token_id, student.kind, one_pass=cfg.kd is not None
    )
    total = tc.max_steps or max(1, math.ceil(tc.epochs * stream.per_epoch / tc.grad_accum))
    return student, formatted, stream, total


def _kd_term(cfg: Config, task: Task, student: Student, train_rows: list[Annotation], device):
    """The soft-target term when the config has a `kd:` section (teacher loaded, checks run)."""
    if cfg.kd is None:
        return None
    from stepdistill.kd.term import KDTerm

    return KDTerm.from_config(
        cfg.kd, student.tokenizer, student.base, device, train=cfg.train, task=task, annotations=train_rows
    )


def fit(cfg: Config, task: Task, splits: dict[str, list[Annotation]], resume: bool = False) -> Path:
    """Train on splits['train'], select on splits['valid'], evaluate cfg.eval.splits; the run folder."""
    from accelerate import Accelerator
    from torch.utils.tensorboard import SummaryWriter

    run_dir, tc = cfg.run_dir, cfg.train
    last = _check_run_dir(run_dir, resume)
    save_config(cfg, run_dir / "config.yaml")
    student, formatted, stream, total_steps = _prepare(cfg, task, splits["train"], last)

    accelerator = Accelerator(mixed_precision=mixed_precision(tc.precision))
    optimizer = torch.optim.AdamW(_param_groups(student.model, tc.weight_decay), lr=tc.lr)
    scheduler = _scheduler(optimizer, tc, total_steps)
    student.model, optimizer = accelerator.prepare(student.model, optimizer)
    state: dict[str, Any] = {
        "step": 0,
        "best_step": None,
        "best_valid_accuracy": None,
        "elapsed_s": 0.0,
        "examples_seen": 0,
        "tokens_seen": 0,
    }
    log_rows: list[dict[str, Any]] = []
    if last is not None:
        ckpt.restore_optimizer(last, optimizer, scheduler)
        state = ckpt.read_state(last)
        log_path = run_dir / "train_log.jsonl"
        log_rows = (
            [r for _, r in iter_jsonl(log_path) if r["step"] <= state["step"]] if log_path.exists() else []
        )
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=state["step"] if last else None)

    def log(row: dict[str, Any]) -> None:
        log_rows.append(row)
        write_jsonl(run_dir / "train_log.jsonl", log_rows)
        for key, value in row.items():
            if key not in ("step", "epoch") and isinstance(value, (int, float)):
                writer.add_scalar(
                    f"eval/{key}" if key.startswith("valid") else f"train/{key}", value, row["step"]
                )

    base = student.base  # the transformers model the loss runs on (LoRA layers injected in place)
    device = accelerator.device
    kd_term = _kd_term(cfg, task, student, splits["train"], device)
    bar = tqdm(total=total_steps, initial=state["step"], desc=cfg.name, disable=None)
    window, clock = Window(), time.perf_counter() - state["elapsed_s"]
    for step in range(state["step"], total_steps):
        student.model.train()
        for k in range(tc.grad_accum):
            micro = step * tc.grad_accum + k
            batch = stream[micro].to(device)
            torch.manual_seed(_micro_seed(tc.seed, micro))
            if kd_term is None:
                # Label loss, rationale loss and alpha, pass by pass: see step.forward_backward.
                parts = forward_backward(
                    base, batch, student.kind, tc,
                    backward=lambda loss: accelerator.backward(loss / tc.grad_accum),
                    autocast=accelerator.autocast,
                )  # fmt: skip
            else:
                with accelerator.autocast():
                    parts = compute_loss(base, batch.passes[0], student.kind, tc, kd_term=kd_term)
                accelerator.backward(parts.total / tc.grad_accum)
            window.add(parts, batch)
        if tc.max_grad_norm:
            accelerator.clip_grad_norm_(student.model.parameters(), tc.max_grad_norm)
        optimizer.step()
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        state.update(step=done, elapsed_s=time.perf_counter() - clock)
        bar.update(1)
        is_eval = done % tc.eval_every == 0 or done == total_steps
        is_save = is_eval or (tc.save_every is not None and done % tc.save_every == 0)
        if done % tc.log_every == 0 or is_save:
            # Checkpoints always end a log window, so a resumed run logs the same rows.
            state["tokens_seen"] += window.tokens
            state["examples_seen"] += window.examples
            log(window.row(done, done * tc.grad_accum / stream.per_epoch, lr, state["elapsed_s"]))
            bar.set_postfix(loss=f"{log_rows[-1].get('loss', 0):.4f}")
            window = Window()
        if is_eval:
            result = _validate(student, task, splits.get("valid", []), cfg)
            log({"step": done, **result})
            acc = result["valid_accuracy"]
            if state["best_step"] is None or (
                acc is not None and acc > (state["best_valid_accuracy"] or -1.0)
            ):
                state.update(best_step=done, best_valid_accuracy=acc)
        if is_save:
            ckpt.save_checkpoint(run_dir, student, optimizer, scheduler, state)
            if is_eval and state["best_step"] == done:
                ckpt.record_best(run_dir, done, state["best_valid_accuracy"])
            ckpt.prune(run_dir, tc.keep_checkpoints, state["best_step"])
    bar.close()
    writer.close()
    _finish(cfg, task, splits, formatted, state, run_dir)
    return run_dir


def _finish(cfg: Config, task: Task, splits, formatted, state: dict[str, Any], run_dir: Path) -> None:
    """Export the best student to best/, evaluate it and write metrics.json."""
    best_dir = ckpt.export_best(run_dir, state["best_step"])
    student = load_saved_student(best_dir, kind=cfg.student.kind)
    if torch.cuda.is_available():
        student.model.to("cuda")
    wanted = [s for s in cfg.eval.splits if s in splits]
    results, latency = evaluate_splits(student, task, splits, cfg, wanted, run_dir)
    wall = state["elapsed_s"]
    metrics = base_metrics(cfg, student)
    metrics.update(
        best_step=state["best_step"],
        train={
            "steps": state["step"],
            "examples": len(formatted.examples),
            **formatted.counts(),  # label_examples, rationale_examples, skipped
            "examples_seen": state["examples_seen"],
            "wall_s": wall,
            "tokens_per_s": state["tokens_seen"] / wall if wall else None,
        },
        splits=results,
        latency=latency,
    )
    write_json(run_dir / "metrics.json", metrics)

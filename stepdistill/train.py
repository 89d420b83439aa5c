"""The `stepdistill train CONFIG [--resume [--allow-config-change]]` command.

    from stepdistill.config import load_config
    from stepdistill.train import train
    run_dir = train(load_config("configs/demo.yaml"))

It reads the task and the data (the run's own annotations when `annotate` wrote them), takes the run
folder's lock, catches SIGTERM/SIGINT (a checkpoint at the next step, then exit 75), checks the run
folder and the launch, saves the resolved config, builds the soft-target term when the config has a
`kd:` section, trains (stepdistill.training.loop.fit, which validates through the callback given
here), then exports best/, evaluates it on eval.splits and writes metrics.json.

Everything a run writes lands in runs/<name>/: config.yaml, train_log.jsonl, tb/ (TensorBoard),
checkpoints/step-<N>/ (+ best.json), best/ (the selected student, plain from_pretrained),
metrics.json and predictions/<split>.jsonl. Model selection uses the valid split only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from stepdistill.config import Config, save_config
from stepdistill.schema import Annotation
from stepdistill.tasks.base import Task


def train(cfg: Config, resume: bool = False, allow_config_change: bool = False) -> Path:
    """Load the task and splits named by `cfg`, train, evaluate; returns the run folder.
    Holds the run folder's lock; SIGTERM/SIGINT stop at the next step with a checkpoint (preempt.py)."""
    from stepdistill import runlock
    from stepdistill.config import resolved
    from stepdistill.data.splits import load_splits
    from stepdistill.runfiles import with_annotations
    from stepdistill.tasks import get_task
    from stepdistill.training import preempt, rationales
    from stepdistill.training.formatting import trained_label
    from stepdistill.training.models import load_tokenizer

    cfg = with_annotations(resolved(cfg))  # the run's annotations when `annotate` wrote them
    task = get_task(cfg.task)
    splits = load_splits(cfg.data, task)
    rationales.preflight(  # a rationale_max_tokens that keeps no rationale fails before the student loads
        task, splits["train"], cfg.train,
        lambda ann: trained_label(ann, cfg.train)[0], lambda: load_tokenizer(cfg.student),
    )  # fmt: skip
    with runlock.hold(cfg.run_dir, "train"), preempt.on_signals():
        return train_on(cfg, task, splits, resume=resume, allow_config_change=allow_config_change)


def train_on(
    cfg: Config,
    task: Task,
    splits: dict[str, list[Annotation]],
    resume: bool = False,
    allow_config_change: bool = False,
) -> Path:
    """Train on splits['train'], select on splits['valid'], evaluate cfg.eval.splits; the run folder."""
    from stepdistill.evaluate import outcome_bits, predict_labels, score
    from stepdistill.training import checkpoint as ckpt
    from stepdistill.training import distributed as dist
    from stepdistill.training.device import make_accelerator
    from stepdistill.training.loop import fit
    from stepdistill.training.resume_check import check_resume, model_default

    run_dir, tc = cfg.run_dir, cfg.train
    accelerator = make_accelerator(tc.precision, tc.dist_timeout_s)
    main = accelerator.is_main_process
    dist.check_launch(accelerator, tc, cfg.student, cfg.model_dump(mode="json"))
    last = ckpt.resume_point(run_dir, resume)
    if last is not None:  # refuses a changed config unless the change cannot alter the result
        dumped = cfg.model_dump(mode="json")
        check_resume(
            run_dir / "config.yaml", dumped, allow_config_change, write=main, default=model_default(cfg)
        )
    accelerator.wait_for_everyone()  # every process has read the folder before the main one writes
    if main:
        save_config(cfg, run_dir / "config.yaml")

    def validate(student) -> dict[str, Any]:
        """Validation accuracy of the current student (every process; generation is shared)."""
        predictions = predict_labels(student, task, splits["valid"], tc, cfg.eval)
        scores = score(task, predictions)
        return {"valid_accuracy": scores["accuracy"], "valid_n": scores["n"],
                "valid_correct": outcome_bits(predictions)}  # fmt: skip

    state = fit(
        accelerator, run_dir, cfg.student, tc, task, splits, validate, last=last,
        make_kd=kd_builder(cfg, task, splits["train"]), name=cfg.name, eval_batch_size=cfg.eval.batch_size,
    )  # fmt: skip
    _finish(cfg, task, splits, state, accelerator)
    return run_dir


def kd_builder(cfg: Config, task: Task, train_rows: list[Annotation]) -> Callable[[Any, Any], Any] | None:
    """make_kd(student, device) for fit when the config has a `kd:` section (teacher loaded, checks
    run when it is called), else None."""
    if cfg.kd is None:
        return None
    from stepdistill.kd import on_policy
    from stepdistill.kd.term import KDTerm

    def make_kd(student, device):
        term = KDTerm.from_config(
            cfg.kd,
            student.tokenizer,
            student.base,
            device,
            train=cfg.train,
            task=task,
            annotations=train_rows,
        )
        # kd.on_policy: the same term, with the student sampling its KD rows on a share of the steps
        return on_policy.build(term, cfg.train, student.tokenizer, student.base, student.kind)

    return make_kd


def _finish(cfg: Config, task: Task, splits, state: dict[str, Any], accelerator) -> None:
    """Export the best student to best/, evaluate it (generation shared by all processes) and
    write metrics.json (main process)."""
    from stepdistill.data.io import write_json
    from stepdistill.evaluate import evaluate_splits
    from stepdistill.predict import base_metrics
    from stepdistill.training import checkpoint as ckpt
    from stepdistill.training.device import device_of
    from stepdistill.training.models import load_saved_student

    run_dir = cfg.run_dir
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        ckpt.export_best(run_dir, state["best_step"])
        if not splits.get("valid"):
            print(f"no validation rows: best/ is the last checkpoint (step {state['best_step']})", flush=True)
    accelerator.wait_for_everyone()
    student = load_saved_student(run_dir / "best", kind=cfg.student.kind)
    student.model.to(device_of(accelerator.device))
    wanted = [s for s in cfg.eval.splits if s in splits]
    results, latency = evaluate_splits(student, task, splits, cfg.train, cfg.eval, wanted, run_dir)
    wall = state["elapsed_s"]
    metrics = base_metrics(cfg, student)
    metrics.update(
        best_step=state["best_step"],
        selected_by="last checkpoint (no validation rows)"
        if not splits.get("valid")
        else "valid_accuracy, ties broken by valid_loss",
        train={
            "steps": state["step"],
            "examples": state["train_examples"],
            # label_examples, rationale_examples, skipped, and the rationales trained on (examples
            # by number of rationales, rationale rows, lengths: training/formatting.py counts())
            **state["train_counts"],
            "examples_seen": state["examples_seen"],
            "num_processes": accelerator.num_processes,
            "examples_per_process": state["examples_per_process"],
            "wall_s": wall,
            "tokens_per_s": state["tokens_seen"] / wall if wall else None,
            "train_flops": state.get("train_flops"),  # training/flops.py: useful FLOPs, no padding
            "on_policy": state.get("on_policy"),  # kd.on_policy: samples, generation time and FLOPs
            "stopped_early": state.get("stopped_early", False),  # train.patience ended it
        },
        splits=results,
        latency=latency,
    )
    if accelerator.is_main_process:
        write_json(run_dir / "metrics.json", metrics)
    accelerator.wait_for_everyone()

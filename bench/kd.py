"""Distilling a fine-tuned SmolLM2 teacher on the arithmetic demo task: SFT on the teacher's outputs,
off-policy KD, on-policy KD and mixed, each with and without step-by-step rationales, over seeds, to a
plateau, at the end and at matched compute.

    make bench-kd                                    # = .venv/bin/python bench/kd.py (3 seeds x 8 variants)
                                                     #   label-only: ~45 min of training a seed on one core;
                                                     #   step-by-step: several times that (longer targets)
    .venv/bin/python bench/kd.py --seeds 0           # one seed of every variant; later calls add seeds
    .venv/bin/python bench/kd.py --variants sbs_kd sbs_on_policy   # some variants only
    .venv/bin/python bench/kd.py --smoke             # a few steps each, to check the plumbing
    .venv/bin/python bench/kd.py --report            # rewrite the BENCHMARKS.md section from kd.json

1. Teacher: the embedded SmolLM2-135M-Instruct (all 30 layers), fine-tuned on the demo task's gold
   equations (method standard), then asked greedily for every training problem (its evaluation of
   the train split): those answers are the teacher's outputs every student learns from. They are
   generated once, in the teacher's run folder, and reused by every later call.
2. Students cut from that teacher (every other layer: 15 of 30, weights copied), trained on the
   teacher-labelled train split (method distill), selected on the gold validation split, stopped
   after PATIENCE evaluations without a better validation accuracy (or at the step cap):
     sft        cross-entropy on the teacher's answers
     kd         0.5 CE + 0.5 forward KL(teacher || student) along the teacher's answers (T = 2)
     on_policy  0.5 CE + 0.5 reverse KL on the student's own samples, every step (lmbda 1)
     mixed      0.5 CE + 0.5 JSD(beta 0.5), on the student's samples on half of the steps (lmbda 0.5)
   The three KD variants share weight and temperature, so only the divergence and lmbda differ.
   sbs_*: the same four with method step_by_step (alpha 0.5) on a second teacher, fine-tuned on the
   gold equations and the demo's reference explanations (method step_by_step, twice the steps): its
   greedy labels and rationales are the targets, the KD term covers both tasks, and on-policy rows
   are the student's own `explain:` rationales and `predict:` labels, scored by that teacher.
3. Held-out test split: accuracy per seed, paired 95% intervals and McNemar (bench/compare.py) at
   the end of training; at matched training FLOPs (generation included) on the validation rows'
   learning curves (stepdistill/report/curves.py); train_flops and wall seconds of each run.

The label-only teacher has never seen a rationale; what it writes when asked with the `explain:`
prefix is recorded, as the evidence that step-by-step cells need the second teacher.

Results go to bench/results/kd.json (merged: a run already there is not trained again) and to the
<!-- bench:kd --> section of BENCHMARKS.md, rewritten after every finished run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stepdistill.threads import sleep_idle_cpu_threads  # noqa: E402

sleep_idle_cpu_threads()  # before torch loads

import torch  # noqa: E402
from benchmarks_md import write_section  # noqa: E402
from compare import compare_cells, interval_cell  # noqa: E402

from stepdistill.config import config_from_dict  # noqa: E402
from stepdistill.data.io import iter_jsonl, write_json, write_jsonl  # noqa: E402
from stepdistill.demo_data import generate_demo_data  # noqa: E402
from stepdistill.report.curves import compare_matched, matched_verdict  # noqa: E402
from stepdistill.schema import Annotation  # noqa: E402

OUT = ROOT / "runs" / "bench-kd"
RESULTS = ROOT / "bench" / "results" / "kd.json"
# test: the held-out set of every end-of-training number; valid: checkpoint selection, patience and
# the learning curves of the matched-compute comparisons (40 rows, so that one row is 2.5 points).
SIZES = {"train": 120, "valid": 40, "test": 60}
KEEP = list(range(0, 30, 2))  # every other of SmolLM2's 30 decoder layers
# Teacher: ~4 epochs of 120 problems at batch 8 (60/60 on the test split of the first version of
# this bench, which held 20 validation problems; the split below starts 20 problems later).
# Students: validated every 10 steps (2/3 of an epoch), stopped after 3 evaluations without a better
# validation accuracy, capped at 150 steps (10 epochs).
FULL = {"teacher_steps": 60, "eval_every": 10, "patience": 3, "max_steps": 150}
SMOKE = {"teacher_steps": 4, "eval_every": 2, "patience": 1, "max_steps": 4}
KD = {"teacher_model": None, "temperature": 2.0, "weight": 0.5}  # shared by the three KD variants
LABEL_ONLY: dict[str, tuple[str, dict[str, Any] | None]] = {
    "sft": ("SFT on the teacher's outputs", None),
    "kd": ("off-policy KD (forward KL)", {"loss": "forward_kl"}),
    "on_policy": ("on-policy (λ = 1, reverse KL)", {"loss": "reverse_kl", "on_policy": {"lmbda": 1.0}}),
    "mixed": (
        "mixed (λ = 0.5, JSD β = 0.5)",
        {"loss": "jsd", "jsd_beta": 0.5, "on_policy": {"lmbda": 0.5}},
    ),
}
# The same four on the rationale teacher's labels and rationales (method step_by_step, alpha 0.5):
# the KD term on both tasks, so on-policy rows are the student's own rationales (`explain:` rows)
# and labels (`predict:` rows), each scored by the teacher.
STEP_BY_STEP = {
    f"sbs_{v}": (f"step-by-step, {name}", None if kd is None else {**kd, "tasks": ["label", "rationale"]})
    for v, (name, kd) in LABEL_ONLY.items()
}
VARIANTS = {**LABEL_ONLY, **STEP_BY_STEP}
# (A, B) of the paired comparisons: each on-policy variant against both off-policy baselines, in
# both settings, and each step-by-step variant against its label-only twin.
_P = (("on_policy", "kd"), ("on_policy", "sft"), ("mixed", "kd"), ("mixed", "sft"), ("kd", "sft"))
PAIRS = _P + tuple((f"sbs_{a}", f"sbs_{b}") for a, b in _P) + tuple((f"sbs_{v}", v) for v in LABEL_ONLY)
# Rationales are ~25-35 tokens (the demo's reference explanations); the sampled ones share the cap.
SBS_TARGET_TOKENS = 64
# The rationale teacher trains this many times the label teacher's steps (two rows a problem).
SBS_TEACHER_STEPS = 2


def base_config(name: str, model: str, data: dict[str, str], train: dict[str, Any], **extra: Any):
    raw = {
        "name": name,
        "out_dir": str(OUT),
        "task": {"name": "arith"},
        "data": data,
        "student": {"model": model, "kind": "causal"},
        "train": {
            "method": "standard",
            "batch_size": 8,
            "lr": 3e-4,  # the demo's rate: cut students re-learn their layer links
            "warmup_ratio": 0.05,
            "log_every": 5,
            "max_input_length": 96,
            "max_target_length": 24,  # equations are under 12 tokens; also the samples' cap
            "precision": "fp32",
            "seed": 0,
            **train,
        },
        "eval": {"batch_size": 32, "max_new_tokens": 16, "splits": ["test"]},
    }
    raw.update(extra)
    return config_from_dict(raw)


def timed_train(cfg) -> tuple[Path, float]:
    """Train (continuing from the run folder's last checkpoint when one is there); run folder, wall s."""
    from stepdistill.train import train
    from stepdistill.training.checkpoint import latest_checkpoint

    start = time.perf_counter()
    run = train(cfg, resume=latest_checkpoint(cfg.run_dir) is not None)
    return run, time.perf_counter() - start


def rows_of(run: Path, split: str) -> list[dict[str, Any]]:
    return [r for _, r in iter_jsonl(run / "predictions" / f"{split}.jsonl")]


def teacher_labelled(
    teacher_run: Path, gold_train: str, out: Path, rationales: dict[str, str] | None = None
) -> dict[str, int]:
    """The train split with the teacher's greedy answers as teacher_label (and, from a rationale
    teacher, its greedy rationales by id) as annotated JSONL at `out`; counts of rows, rows without
    an answer and answers that disagree with gold."""
    from stepdistill.data.readers import load_examples
    from stepdistill.tasks import get_task
    from stepdistill.tasks.config import TaskConfig

    preds = {r["id"]: r for r in rows_of(teacher_run, "train")}
    rows = []
    for ann in load_examples(gold_train, get_task(TaskConfig(name="arith"))):
        p = preds[ann.id]
        rows.append(
            Annotation(
                ann.id,
                ann.fields,
                ann.gold,
                teacher_label=p["pred"],
                teacher_raw=p["pred"],
                teacher_rationale=None if rationales is None else rationales[ann.id],
                teacher_model=str(teacher_run / "best"),
            )  # fmt: skip
        )
    write_jsonl(out, [a.to_dict() for a in rows])
    return {
        "rows": len(rows),
        "no_answer": sum(a.teacher_label is None for a in rows),
        "wrong": sum(not preds[a.id]["correct"] for a in rows),
    }


@torch.no_grad()
def explain(
    teacher_dir: Path, cfg, split: str, max_new_tokens: int, n: int | None = None
) -> list[tuple[str, str, str]]:
    """What a fine-tuned teacher writes when asked for a rationale (`explain:` prefix) on the first
    `n` rows of `split` (all when None): (id, input, output) per row."""
    from stepdistill.data.splits import load_splits
    from stepdistill.evaluate import generate
    from stepdistill.tasks import get_task
    from stepdistill.training.formatting import rationale_source
    from stepdistill.training.models import load_saved_student

    task = get_task(cfg.task)
    rows = load_splits(cfg.data, task)[split][:n]
    teacher = load_saved_student(teacher_dir, kind="causal")
    asks = [rationale_source(task, a, cfg.train) for a in rows]
    texts = generate(teacher, asks, cfg.train, cfg.eval, max_new_tokens=max_new_tokens)
    return [(a.id, ask, text) for a, ask, text in zip(rows, asks, texts)]


def explain_probe(teacher_dir: Path, cfg, n: int = 3) -> list[dict[str, str]]:
    """The teacher's rationales for the first `n` test problems: the evidence for whether
    step-by-step cells can be made from it."""
    return [{"input": ask, "output": text} for _, ask, text in explain(teacher_dir, cfg, "test", 48, n)]


def teacher_rationales(teacher_run: Path, cfg) -> dict[str, str]:
    """The rationale teacher's greedy rationale for every training problem, by id: generated once, in
    its run folder, and read back by every later call."""
    path = teacher_run / "rationales-train.json"
    if not path.is_file():
        rows = explain(teacher_run / "best", cfg, "train", SBS_TARGET_TOKENS)
        write_json(path, {i: text.strip() for i, _, text in rows})
    return json.loads(path.read_text())


def gold_rationale_split(gold_train: str, out: Path) -> str:
    """The train split annotated with the gold equation as label and the demo's reference explanation
    as rationale: what the rationale teacher is fine-tuned on."""
    from stepdistill.data.readers import load_examples
    from stepdistill.tasks import get_task
    from stepdistill.tasks.config import TaskConfig

    why = {r["id"]: r["explanation"] for _, r in iter_jsonl(gold_train)}
    rows = [
        Annotation(a.id, a.fields, a.gold, teacher_label=a.gold, teacher_rationale=why[a.id])
        for a in load_examples(gold_train, get_task(TaskConfig(name="arith")))
    ]
    write_jsonl(out, [a.to_dict() for a in rows])
    return str(out)


def run_teacher(steps: dict[str, int], paths: dict[str, str], rationales: bool = False) -> dict[str, Any]:
    """Fine-tune (or reuse) a teacher; its accuracy, its train answers as a labelled split, the probe.
    `rationales`: the step-by-step teacher, fine-tuned on the gold equations and reference
    explanations (SBS_TEACHER_STEPS times the steps), whose labelled split carries its rationales."""
    from stepdistill.embedded import smollm2_converted

    smol = str(smollm2_converted())  # one float32 folder the teacher starts from
    n = steps["teacher_steps"] * (SBS_TEACHER_STEPS if rationales else 1)
    train: dict[str, Any] = {"max_steps": n, "eval_every": n}  # one selection point
    data, name = paths, f"teacher-{n}"
    if rationales:
        gold = gold_rationale_split(paths["train"], OUT / "data" / "train-gold-rationales.jsonl")
        data, name = {**paths, "train": gold}, f"teacher-sbs-{n}"
        train.update(method="step_by_step", label_source="gold", max_target_length=SBS_TARGET_TOKENS)
    cfg = base_config(name, smol, data, train, eval={"batch_size": 32, "max_new_tokens": 16,
                      "splits": ["test", "train"]})  # fmt: skip
    done = (cfg.run_dir / "metrics.json").is_file()
    run = cfg.run_dir if done else timed_train(cfg)[0]
    m = json.loads((run / "metrics.json").read_text())
    labelled = OUT / "data" / f"train-{name}.jsonl"
    why = teacher_rationales(run, cfg) if rationales else None
    return {
        "dir": str(run / "best"),
        "test_accuracy": m["splits"]["test"]["accuracy"],
        "test_n": m["splits"]["test"]["n"],
        "train_accuracy": m["splits"]["train"]["accuracy"],
        "train_wall_s": m["train"]["wall_s"],
        "test_preds": {r["id"]: r["pred"] for r in rows_of(run, "test")},
        "labels": teacher_labelled(run, paths["train"], labelled, why),
        "labelled_train": str(labelled),
        "rationale_words": None if why is None else _median([len(t.split()) for t in why.values()]),
        "explain_probe": explain_probe(run / "best", cfg),
    }


def make_data() -> dict[str, str]:
    """The demo task's splits (deterministic from seed 0), written once."""
    paths = {s: str(OUT / "data" / f"{s}.jsonl") for s in SIZES}
    if not all(Path(p).is_file() for p in paths.values()):
        generate_demo_data(paths, SIZES, seed=0)
    return paths


def teacher_of(variant: str) -> str:
    """The results key of the teacher a variant learns from."""
    return "teacher_sbs" if variant in STEP_BY_STEP else "teacher"


def student_config(variant: str, seed: int, steps: dict[str, int], teacher: dict[str, Any], paths):
    """The config of one student: the teacher-labelled train split, gold valid and test."""
    data = {**paths, "train": teacher["labelled_train"]}
    sbs = variant in STEP_BY_STEP
    train = {
        # the teacher's answers are the labels of every variant (and its rationales, step by step)
        "method": "step_by_step" if sbs else "distill",
        **({"max_target_length": SBS_TARGET_TOKENS} if sbs else {}),
        "max_steps": steps["max_steps"],
        "eval_every": steps["eval_every"],
        "patience": steps["patience"],
        "seed": seed,
    }
    kd = VARIANTS[variant][1]
    extra = {} if kd is None else {"kd": {**KD, "teacher_model": teacher["dir"], **kd}}
    name = f"{variant}-s{seed}-{steps['max_steps']}"
    cfg = base_config(name, teacher["dir"], data, train, **extra)
    cfg.student.keep_layers = KEEP
    return cfg


@torch.no_grad()
def heldout_kl(teacher_dir: Path, student_dir: Path, cfg) -> dict[str, float]:
    """Teacher-forced KL(teacher || student) and top-1 agreement over the test split's gold targets."""
    from stepdistill.data.splits import load_splits
    from stepdistill.kd.losses import dense_kd_loss
    from stepdistill.kd.whitebox import load_teacher, teacher_target_logits
    from stepdistill.tasks import get_task
    from stepdistill.training.batching import collate, encode_examples
    from stepdistill.training.formatting import build_pairs
    from stepdistill.training.models import load_saved_student
    from stepdistill.training.step import target_logits

    task = get_task(cfg.task)
    test = load_splits(cfg.data, task)["test"]
    tc = cfg.train.model_copy(update={"method": "standard"})  # the gold targets (test has no teacher labels)
    student = load_saved_student(student_dir, kind="causal")
    student.model.eval()
    teacher, kind = load_teacher(str(teacher_dir))
    enc = encode_examples(student.tokenizer, build_pairs(task, test, tc).examples, tc, kind)
    kl_sum = agree = n = 0.0
    for start in range(0, len(enc), 16):
        batch = collate(enc[start : start + 16], student.tokenizer.pad_token_id, kind)
        at = target_logits(student.model, batch, kind)
        t = teacher_target_logits(teacher, batch.input_ids, batch.attention_mask, batch.labels, kind)
        kl_sum += float(dense_kd_loss(at.logits, t)) * len(t)
        agree += float((at.logits.argmax(-1) == t.argmax(-1)).sum())
        n += len(t)
    return {"heldout_kl": kl_sum / n, "token_agreement": agree / n}


def run_student(variant: str, seed: int, steps: dict[str, int], teacher: dict[str, Any], paths) -> dict:
    """Train one student and keep what the comparisons need; its weights are deleted afterwards."""
    cfg = student_config(variant, seed, steps, teacher, paths)
    run, wall = timed_train(cfg)
    m = json.loads((run / "metrics.json").read_text())
    test = rows_of(run, "test")
    log = [r for _, r in iter_jsonl(run / "train_log.jsonl")]
    keys = ("step", "examples_seen", "train_flops", "valid_accuracy", "valid_correct")
    tr = m["train"]
    out = {
        "variant": variant,
        "seed": seed,
        "test_accuracy": m["splits"]["test"]["accuracy"],
        "n_test": m["splits"]["test"]["n"],
        # per-example outcomes: paired comparisons on the same test rows (bench/compare.py)
        "test_correct": {r["id"]: int(bool(r["correct"])) for r in test},
        "agrees_with_teacher": statistics.fmean(
            r["pred"] == teacher["test_preds"].get(r["id"]) for r in test
        ),
        "steps": tr["steps"],
        "best_step": m["best_step"],
        "stopped_early": tr["stopped_early"],
        "train_flops": tr["train_flops"],  # sampling and the sampled rows' training included
        "train_wall_s": tr["wall_s"],  # the training loop with its validations
        "wall_s": wall,  # this call: loading, training, test evaluation (a resumed run: since resuming)
        "on_policy": tr.get("on_policy"),
        "curve": [{k: r.get(k) for k in keys} for r in log if "valid_accuracy" in r],
        **heldout_kl(Path(teacher["dir"]), run / "best", cfg),
    }
    # ~1 GB of checkpoints per run; the numbers above are all the report reads.
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    shutil.rmtree(run / "best", ignore_errors=True)
    return out


def runs_of(results: dict[str, Any], variant: str) -> list[dict[str, Any]]:
    return sorted((r for r in results["runs"].values() if r["variant"] == variant), key=lambda r: r["seed"])


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def variant_row(variant: str, runs: list[dict[str, Any]]) -> str:
    accs = [100 * r["test_accuracy"] for r in runs]
    gen = [(r.get("on_policy") or {}).get("generation_flops", 0) / r["train_flops"] for r in runs]
    at_best = [next(p["train_flops"] for p in r["curve"] if p["step"] == r["best_step"]) / 1e12 for r in runs]
    return (
        f"| {VARIANTS[variant][0]} | {' / '.join(f'{a:.1f}' for a in accs)} | {_median(accs):.1f} | "
        f"{max(accs) - min(accs):.1f} | {_median([100 * r['agrees_with_teacher'] for r in runs]):.1f} | "
        f"{_median([r['heldout_kl'] for r in runs]):.3f} | "
        f"{', '.join(str(r['steps']) + ' (' + str(r['best_step']) + ')' for r in runs)} | "
        f"{', '.join('yes' if r['stopped_early'] else 'no (cap)' for r in runs)} | "
        f"{_median([r['train_flops'] / 1e12 for r in runs]):.1f} | {_median(at_best):.1f} | {100 * _median(gen):.0f}% | "
        f"{_median([r['train_wall_s'] for r in runs]):.0f} |"
    )


def _matched_cell(p: dict[str, Any]) -> str:
    flops = f"{statistics.fmean(p['a_flops']) / 1e12:.1f} / {statistics.fmean(p['b_flops']) / 1e12:.1f}"
    steps = f"{'/'.join(map(str, p['a_steps']))} vs {'/'.join(map(str, p['b_steps']))}"
    return f"{flops}: {100 * p['a']:.1f} vs {100 * p['b']:.1f}, {interval_cell(p['ci'])} (steps {steps})"


def pair_row(a: str, b: str, results: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """One comparison on the seeds both variants ran: end of training (test) and matched compute
    (validation curves); the row and the end-of-training statistics."""
    seeds = {r["seed"] for r in runs_of(results, a)} & {r["seed"] for r in runs_of(results, b)}
    ra = [r for r in runs_of(results, a) if r["seed"] in seeds]
    rb = [r for r in runs_of(results, b) if r["seed"] in seeds]
    if not seeds:
        return None
    names = (VARIANTS[a][0], VARIANTS[b][0])
    end = compare_cells(ra, rb, names)
    matched = compare_matched([r["curve"] for r in ra], [r["curve"] for r in rb])
    ratio = _median([r["train_flops"] for r in ra]) / _median([r["train_flops"] for r in rb])
    words = matched_verdict(*names, matched) if matched else "-"
    row = (
        f"| {names[0]} | {names[1]} | {len(seeds)} | {interval_cell(end['ci'])} | {end['mcnemar']} | "
        f"{end['verdict']} | {ratio:.2f} | {' · '.join(_matched_cell(p) for p in matched) or '-'} | "
        f"{words} |"
    )
    return row, {**end, "names": names, "ratio": ratio, "matched_verdict": words}


def reading(stats: list[dict[str, Any]]) -> str:
    """What the intervals show, in words derived from them (no number typed in): the winners at
    the end of training and at matched compute, or that there are none."""
    if not stats:
        return "Reading: no comparison yet (no pair of variants has run on a common seed)."
    won = [s for s in stats if s["ci"] is not None and s["ci"].excludes_zero]
    end = "; ".join(
        f"{s['verdict']} ({interval_cell(s['ci'])} points; A used {s['ratio']:.2f}x B's train FLOPs)"
        for s in won
    )
    matched = [s["matched_verdict"] for s in stats if " beats " in s["matched_verdict"]]
    return (
        f"Reading. End of training: {end or 'no winner, every paired 95% interval includes 0'}"
        f"{f' (the other {len(stats) - len(won)} include 0)' if won else ''}. At matched compute: "
        f"{'; '.join(matched) if matched else 'no winner'}."
    )


def ceiling(results: dict[str, Any]) -> str:
    """A sentence when students reach the teacher's test accuracy: the end-of-training comparison
    then cannot separate them, whatever the intervals say."""
    top = [
        v
        for v in VARIANTS
        if runs_of(results, v)
        and min(r["test_accuracy"] for r in runs_of(results, v)) >= results[teacher_of(v)]["test_accuracy"]
    ]
    if not top:
        return ""
    names = ", ".join(VARIANTS[v][0] for v in top)
    return (
        f" Every seed of {names} is at or above its teacher's own test accuracy: at that ceiling the "
        "test rows cannot tell these variants apart; what separates them is how far each got for the "
        "same training FLOPs (the matched-compute columns)."
    )


def sbs_teacher(t: dict[str, Any] | None, s: dict[str, int]) -> str:
    """The paragraph on the rationale teacher of the step-by-step variants ('' before it exists)."""
    if t is None:
        return ""
    probe = t["explain_probe"][0]
    return (
        "Step-by-step variants learn from a second teacher: SmolLM2-135M-Instruct fine-tuned with "
        f"method step_by_step on the gold equations and the demo's reference explanations "
        f"({SBS_TEACHER_STEPS * s['teacher_steps']} steps, {t['train_wall_s']:.0f} s): {round(t['test_accuracy'] * t['test_n'])} "
        f"of {t['test_n']} test problems right ({100 * t['test_accuracy']:.1f}%); its greedy labels "
        f"({t['labels']['wrong']} of {t['labels']['rows']} wrong) and rationales (median "
        f"{t['rationale_words']:.0f} words; asked `{probe['input']}` it writes `{probe['output'].strip()}`) "
        "are the students' targets, the KD term on both tasks. A step-by-step variant against its "
        "label-only twin compares two recipes, teacher included (their teachers' labels differ)."
    )


def markdown(results: dict[str, Any], command: str) -> str:
    t, s = results["teacher"], results["schedule"]
    seeds = sorted({r["seed"] for r in results["runs"].values()})
    rows = [
        "| variant | test acc % per seed | median | spread (max − min) | agrees with teacher % | "
        "held-out KL(T‖S) | steps (best at) | stopped by patience | train TFLOPs | TFLOPs to the best | "
        "of it generation | train wall s |",
        "|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    rows += [variant_row(v, runs_of(results, v)) for v in VARIANTS if runs_of(results, v)]
    pairs = [p for p in (pair_row(a, b, results) for a, b in PAIRS) if p is not None]
    missing = [f"{v} s{seed}" for v in VARIANTS for seed in (0, 1, 2)
               if f"{v}/{seed}" not in results["runs"]]  # fmt: skip
    probe = t["explain_probe"][0]
    lines = [
        "## Distilling a fine-tuned teacher: SFT, off-policy KD, on-policy KD (`make bench-kd`)",
        "",
        f"{results['date']} · {platform.machine()}, {os.cpu_count()} CPU cores (shared with other "
        f"developers' jobs: wall times are indicative only) · `{command}` · seeds {', '.join(map(str, seeds))}",
        "",
        f"Teacher: SmolLM2-135M-Instruct fine-tuned on the demo task's gold equations ({s['teacher_steps']} "
        f"steps, {t['train_wall_s']:.0f} s): {round(t['test_accuracy'] * t['test_n'])} of {t['test_n']} test "
        f"problems right ({100 * t['test_accuracy']:.1f}%), train {100 * t['train_accuracy']:.1f}%. Its greedy answers to the {t['labels']['rows']} training "
        f"problems ({t['labels']['wrong']} wrong, {t['labels']['no_answer']} without an answer) are the "
        "labels of every student. Students: 15 of its 30 layers, initialised from it, trained on those "
        f"labels (batch 8, lr 3e-4), validated every {s['eval_every']} steps on {SIZES['valid']} gold "
        f"problems, stopped after {s['patience']} evaluations without a better validation accuracy or at "
        f"{s['max_steps']} steps; test accuracy is the checkpoint chosen on validation, on {SIZES['test']} "
        "unseen problems. KD variants: 0.5 CE on the teacher's answers + 0.5 divergence, T = 2; "
        "on-policy samples at temperature 1. train FLOPs count the student's sampling and the sampled "
        "rows' training (not the teacher's scoring, as for off-policy KD).",
        "",
        *rows,
        "",
        "Paired comparisons on the seeds both ran. End of training: test rows, bootstrap of the "
        "seed-averaged per-row difference (bench/compare.py), exact McNemar per seed. Matched compute: "
        "validation rows, each run's last evaluation within the smaller side's final train FLOPs, and "
        "again at the compute the side evaluated earlier used (report/curves.py); a winner only when both agree.",
        "",
        "| A | B | seeds | end: A − B test points [95%] | McNemar per seed (A only / B only right) | "
        "reading | train FLOPs A / B | matched compute (validation): TFLOPs A / B: A % vs B %, A − B [95%] | "
        "reading |",
        "|---|---|---:|---:|---|---|---:|---|---|",
        *[row for row, _ in pairs],
        "",
        reading([st for _, st in pairs]) + ceiling(results),
        "",
        sbs_teacher(results.get("teacher_sbs"), s)
        or "No step-by-step cells yet: the teacher above was fine-tuned on equations alone and writes no "
        f"rationale (asked `{probe['input']}` it writes `{probe['output'].strip()}`). The step-by-step "
        "variants learn from a second teacher fine-tuned on rationales (`--variants sbs_sft sbs_kd ...`).",
    ]
    if missing:
        lines += [
            "",
            f"Not run yet: {', '.join(missing)} (`python bench/kd.py --seeds 0 1 2` trains what is missing).",
        ]
    return "\n".join(lines)


def load_results(path: Path) -> dict[str, Any]:
    results = json.loads(path.read_text()) if path.is_file() else {}
    if "runs" not in results:  # no file, or one from the earlier two-student version of this bench
        return {"runs": {}, "commands": []}
    return results


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside the results file: calls for different seeds may run at once (one
    thread each on a small machine), and each merges its runs into the file under it."""
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield


def record(path: Path, key: str, run: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """Add one finished run to the results file (call under `locked`); the file's whole content."""
    results = load_results(path)
    commands = [c for c in results["commands"] if c not in own["commands"]] + own["commands"]
    results.update(own, commands=commands, date=dt.date.today().isoformat())
    results["runs"][key] = run
    write_json(path, results)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="a few steps each; BENCHMARKS.md not written")
    p.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 (--smoke: 0)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--report", action="store_true", help="rewrite the BENCHMARKS.md section from kd.json")
    args = p.parse_args(argv)
    path = RESULTS.with_name("kd-smoke.json") if args.smoke else RESULTS
    steps = SMOKE if args.smoke else FULL
    if args.report:
        results = load_results(path)
        write_section("kd", markdown(results, " ; ".join(results["commands"])))
        return 0
    if load_results(path).get("schedule", steps) != steps:
        raise SystemExit(f"{path} holds runs of another schedule; move it away first")
    threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    command = " ".join([f"{threads}python bench/kd.py", *(argv if argv is not None else sys.argv[1:])])
    torch.manual_seed(0)
    paths = make_data()
    own: dict[str, Any] = {"schedule": steps, "commands": [command]}
    for key in sorted({"teacher"} | {teacher_of(v) for v in args.variants}):  # the report needs "teacher"
        own[key] = run_teacher(steps, paths, rationales=key == "teacher_sbs")
        before = load_results(path).get(key)
        if before and any(before[k] != own[key][k] for k in ("test_preds", "labels")):
            # a teacher retrained in a fresh run folder must answer as the one the recorded runs learnt from
            raise SystemExit(f"the {key} of {path} answered differently; move the file away to start over")
    seeds = args.seeds or ([0] if args.smoke else [0, 1, 2])
    for seed in seeds:  # every variant of a seed before the next seed
        for variant in args.variants:
            key = f"{variant}/{seed}"
            if key in load_results(path)["runs"]:
                continue
            run = run_student(variant, seed, steps, own[teacher_of(variant)], paths)
            with locked(path):
                results = record(path, key, run, own)
                text = markdown(results, " ; ".join(results["commands"]))
                if args.smoke:
                    print(text, flush=True)
                else:
                    write_section("kd", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

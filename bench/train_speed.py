"""Training speed of the real trainer (stepdistill.training.loop.fit, run by stepdistill.train.train_on) against the reference design.

    .venv/bin/python bench/train_speed.py --device cpu --quick                  # minutes on 2 cores
    .venv/bin/python bench/train_speed.py --device cpu --batch-sizes 4,16,64    # the paper's sizes
    .venv/bin/python bench/train_speed.py --device cuda --batch-sizes 64 --time-budget 200
    .venv/bin/python bench/train_speed.py --design packed=train.packing=true --designs reference,ours,packed

Designs, each trained from the same weights on the same SVAMP examples (PaLM labels + rationales):
  reference  bench/reference_trainer.py: HF Trainer, two padded passes per step, full logits
  ours       stepdistill.training.loop.fit with the default TrainConfig
  standard   fit with train.method=standard (label rows only): memory of a standard step
  variants   fit with train-config overrides (VARIANTS below, or --design NAME=section.key=value,...);
             a variant whose key this checkout's config lacks is reported "not available".
Fairness: every design gets the same fixed sequence of full batches (length-grouped by plan_epoch, then
shuffled with a fixed seed so the longest batch is not always in the warm-up), the same warm-up steps
(untimed) and the same timed steps; designs are interleaved within each repeat (order rotated).
The timed window runs from the start of the first timed step to the start of the step after the last
one (each start is taken after that step's batch was collated, in both designs), so it holds the
same data loading, forward, backward, optimizer and logging work for every design. fit is driven
through three patches of its module (no change to stepdistill/): load_student hands it a copy of the
already-loaded student, plan_epoch hands it the fixed batch sequence, and _forward_backward is wrapped to
take the clock and stop the run once the window closes (no checkpoint or evaluation is timed).
Results: bench/results/train_speed-<device>.json and the `train_speed` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import datetime as dt
import gc
import inspect
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stepdistill.threads import sleep_idle_cpu_threads  # noqa: E402

sleep_idle_cpu_threads()  # before torch loads: every design runs with sleeping idle threads

import torch  # noqa: E402
from benchmarks_md import machine_info, write_section  # noqa: E402

from stepdistill.data.io import write_json  # noqa: E402
from stepdistill.training.flops import FlopModel, device_peak_tflops, measure_matmul_tflops  # noqa: E402

# The PaLM teacher outputs (../shared/data beside the checkout; STEPDISTILL_SHARED_DATA elsewhere)
SHARED_DATA = Path(os.environ.get("STEPDISTILL_SHARED_DATA", ROOT.parent / "shared" / "data"))
GOALS = {"cpu_speedup": 1.5, "gpu_speedup": 3.0, "mfu": 0.40, "memory_ratio": 1.3}
REFERENCE = "reference"
DESIGNS: dict[str, tuple[str, dict[str, Any]]] = {  # name -> (title, train-config overrides)
    "ours": ("ours: fit, default TrainConfig", {}),
    "standard": ("ours: fit, train.method=standard (label rows only)", {"train.method": "standard"}),
}
# Variants: fit with config overrides; each runs only where its config key exists in this checkout.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "budget": ("ours + train.max_tokens_per_pass=1024", {"train.max_tokens_per_pass": 1024}),
    "packed": ("ours + train.packing", {"train.packing": True}),
    "plain_loss": (
        "ours with full target logits (train.loss_chunk_tokens=0)",
        {"train.loss_chunk_tokens": 0},
    ),
}
REFERENCE_TITLE = "HF Trainer, two padded passes per step, full logits"


# ---------------------------------------------------------------- memory


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def _malloc_trim() -> None:
    """Return freed heap pages to the OS (glibc); a no-op elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory over a window. CUDA: max_memory_allocated. CPU: the process's peak resident set
    (VmHWM, the counter behind ru_maxrss), reset through /proc/self/clear_refs at the window start;
    freed heap memory is first handed back (malloc_trim) so that memory cached from an earlier
    design neither hides nor inflates this one's. `over_start` = peak minus the memory at start."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.method = (
            "torch.cuda.max_memory_allocated"
            if self.cuda
            else "peak RSS (VmHWM, the ru_maxrss counter) reset via /proc/self/clear_refs after malloc_trim"
        )
        self.start_bytes = 0

    def start(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.start_bytes = torch.cuda.memory_allocated()
        else:
            _malloc_trim()
            Path("/proc/self/clear_refs").write_text("5")
            self.start_bytes = _status_kb("VmRSS") * 1024

    def stop(self) -> tuple[int, int]:
        """(peak bytes, peak bytes above the start)."""
        if self.cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = _status_kb("VmHWM") * 1024
        return peak, max(0, peak - self.start_bytes)


# ---------------------------------------------------------------- data and models


def load_train_annotations(task: str, root: Path = SHARED_DATA) -> list:
    """The task's training annotations (PaLM labels and rationales), usable by every method."""
    from stepdistill.data.io import read_annotations
    from stepdistill.data.official import import_official
    from stepdistill.data.splits import carve_validation

    with tempfile.TemporaryDirectory() as tmp:
        import_official(str(root), task, tmp)
        anns = read_annotations(Path(tmp) / "train.jsonl")
    anns, _valid = carve_validation(anns, 0.1, 0)  # the paper's training part (SVAMP 720 rows)
    # Keep rows both standard (gold) and step_by_step (teacher label + rationale) can train on, so
    # the two memory runs see the same examples in the same batches.
    return [a for a in anns if a.gold is not None and a.annotated]


def smollm2_student() -> tuple[torch.nn.Module, object]:
    """(model, tokenizer) of SmolLM2-135M-Instruct as a plain float32 model, from the embedded
    model's converted folder (stepdistill.embedded: the GGUF's dequantised weights, converted once)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stepdistill.embedded import smollm2_converted

    folder = smollm2_converted()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


def t5_base_model(tokenizer) -> torch.nn.Module:
    """Random weights at t5-v1_1-base size (d_model 768, 12+12 layers, gated-gelu); the vocabulary is
    the SmolLM2 tokenizer's (49,152) because no T5 tokenizer is available offline."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=len(tokenizer),
        d_model=768,
        d_kv=64,
        d_ff=2048,
        num_layers=12,
        num_decoder_layers=12,
        num_heads=12,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5ForConditionalGeneration(cfg)


def t5_base_student(tokenizer):
    """A Student at t5-v1_1-base shape with random weights (vocabulary: the SmolLM2 tokenizer's)."""
    from stepdistill.training.models import Student

    model = t5_base_model(tokenizer)
    n = sum(p.numel() for p in model.parameters())
    return Student(model=model, tokenizer=tokenizer, kind="seq2seq", n_params=n, name="t5-v1_1-base shape")


def encode(anns: list, tokenizer, kind: str, method: str) -> list:
    """Our trainer's encoding of the annotations under `method` (the code path fit takes)."""
    from stepdistill.tasks import get_task
    from stepdistill.tasks.config import TaskConfig
    from stepdistill.training.batching import encode_examples
    from stepdistill.training.config import TrainConfig
    from stepdistill.training.formatting import build_pairs

    cfg = TrainConfig(method=method, label_source="teacher")
    formatted = build_pairs(get_task(TaskConfig(name="svamp")), anns, cfg)
    if len(formatted.examples) != len(anns):
        raise RuntimeError(f"{method}: {dict(formatted.skipped)} rows unusable after filtering")
    return encode_examples(tokenizer, formatted.examples, cfg, kind)


def reference_features(encoded, kind: str) -> list[dict[str, list[int]]]:
    """The reference trainer's features built from OUR token ids (label row, rationale row), so both
    designs train on identical tokens."""
    from reference_trainer import feature

    from stepdistill.training.batching import IGNORE

    def row(e):
        if kind == "causal":
            ids = e.source + e.target
            return ids, [1] * len(ids), [IGNORE] * len(e.source) + e.target
        return e.source, [1] * len(e.source), e.target

    return [feature(row(lab), row(rat)) for lab, rat in encoded]


def batch_sequence(
    encoded, batch_size: int, n_steps: int, seed: int = 0, grouped: bool = True
) -> list[list[int]]:
    """The fixed sequence of `n_steps` batches every design trains on: plan_epoch's batches
    (length-grouped, or plain shuffled: the reference trainer's own sampler), full ones only (the
    reference's sampler cannot take a short one mid-run), shuffled with `seed` (plan_epoch puts the
    longest batch first), repeated when one epoch is too short."""
    from stepdistill.training.batching import example_length, plan_epoch

    plan = plan_epoch([example_length(e) for e in encoded], batch_size, seed, 0, grouped)
    full = [b for b in plan if len(b) == batch_size]
    if not full:
        raise ValueError(f"batch size {batch_size} is larger than the {len(encoded)} examples")
    random.Random(seed).shuffle(full)
    return (full * math.ceil(n_steps / len(full)))[:n_steps]


# ---------------------------------------------------------------- one timed run


class _WindowDone(Exception):
    """Raised at the start of the step after the timed window: the run has given what it measures."""


class Window:
    """Marks taken at the start of each step: memory window from step 0 (AdamW allocates its state in
    the first step), clock from step `warmup`, both closed at step warmup + steps."""

    def __init__(self, device: str, warmup: int, steps: int):
        self.device, self.warmup, self.steps = device, warmup, steps
        self.mem = PeakMemory(device)
        self.t0 = self.c0 = self.seconds = self.cpu_seconds = 0.0
        self.peak = self.over = 0

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def at_step(self, step: int) -> None:
        if step == 0:
            self.mem.start()
        if step == self.warmup:
            self._sync()
            self.t0, self.c0 = time.perf_counter(), time.process_time()
        if step == self.warmup + self.steps:
            self._sync()
            self.seconds = time.perf_counter() - self.t0
            self.cpu_seconds = time.process_time() - self.c0  # all threads of this process
            self.peak, self.over = self.mem.stop()
            raise _WindowDone

    def result(self, sizes: list[tuple[int, int, int]], flops: int) -> dict[str, Any]:
        """`sizes`: (examples, non-padding tokens, forward passes) of each timed step."""
        if len(sizes) != self.steps or not self.seconds:
            raise RuntimeError(f"the run ended after {len(sizes)} of {self.steps} timed steps")
        return {
            "steps": len(sizes),
            "examples": sum(s[0] for s in sizes),
            "tokens": sum(s[1] for s in sizes),
            "passes_per_step": sum(s[2] for s in sizes) / len(sizes),
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "peak_bytes": self.peak,
            "peak_over_start_bytes": self.over,
            "flops": flops,
        }


@contextlib.contextmanager
def _patched(module, **values):
    old = {name: getattr(module, name) for name in values}
    for name, value in values.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in old.items():
            setattr(module, name, value)


def fit_config(name: str, kind: str, overrides: dict[str, Any], args, total: int, out_dir: str):
    """The Config fit trains under: defaults, this benchmark's batch/steps/lr, then the design's
    dotted overrides. Raises ConfigError when an override names a key this checkout lacks."""
    from stepdistill.config import config_from_dict

    raw: dict[str, Any] = {
        "name": name,
        "out_dir": out_dir,
        "task": {"name": "svamp"},
        "data": {"train": "(in memory)"},
        "student": {"model": name, "kind": kind},
        # eval_every = the run's length: the only evaluation/checkpoint falls after the window closes
        "train": {"batch_size": args.batch_size, "max_steps": total, "lr": args.lr, "eval_every": total},
        "eval": {"splits": []},
    }
    for dotted, value in overrides.items():
        node = raw
        *sections, key = dotted.split(".")
        for part in sections:
            node = node.setdefault(part, {})
        node[key] = value
    return config_from_dict(raw, f"design {name}")


def run_fit(make_student: Callable[[], Any], cfg, anns: list, seq: list[list[int]], args,
            flops: int) -> dict[str, Any]:  # fmt: skip
    """One run of the real trainer over the fixed batch sequence; the timed window's measures."""
    from stepdistill.tasks import get_task
    from stepdistill.train import train_on
    from stepdistill.training import batching, loop

    window, sizes = Window(args.device, args.warmup, args.steps), []
    real_step = loop._forward_backward
    signature = inspect.signature(real_step)  # bound by name: robust to added parameters

    def timed_step(*a, **k):
        called = signature.bind(*a, **k).arguments
        step, plan = called["first_micro"] // cfg.train.grad_accum, called["plan"]
        window.at_step(step)
        if step >= args.warmup:
            sizes.append((plan.n_examples, plan.n_tokens, sum(len(m) for m in plan.micro)))
        return real_step(*a, **k)

    def fixed_plan(lengths, batch_size, seed, epoch, group_by_length):
        per = math.ceil(len(lengths) / batch_size)  # StepStream's steps per epoch
        return [seq[(epoch * per + i) % len(seq)] for i in range(per)]

    def cached_student(student_cfg, seed=None):
        return make_student()

    # The DataLoader worker is forked after the patches: it collates the fixed plan too.
    with (
        _patched(loop, _forward_backward=timed_step, load_student=cached_student),
        _patched(batching, plan_epoch=fixed_plan),
    ):
        try:
            train_on(cfg, get_task(cfg.task), {"train": anns})
        except _WindowDone:
            pass
    return window.result(sizes, flops)


def run_reference(make_student: Callable[[], Any], encoded, seq: list[list[int]], args,
                  flops: int) -> dict[str, Any]:  # fmt: skip
    """One run of the reference design over the same batch sequence (a sequential sampler over the
    examples laid out in that order)."""
    from reference_trainer import build_reference_trainer
    from transformers import TrainerCallback

    student = make_student()
    feats = reference_features(encoded, student.kind)
    window = Window(args.device, args.warmup, args.steps)

    class Marks(TrainerCallback):
        n = 0

        def on_step_begin(self, a, state, control, **kwargs):
            Marks.n += 1
            window.at_step(Marks.n - 1)

    with tempfile.TemporaryDirectory() as tmp:
        trainer, _ = build_reference_trainer(
            student.model, student.tokenizer, [feats[i] for b in seq for i in b], student.kind,
            out_dir=tmp, batch_size=args.batch_size, lr=args.lr, max_steps=len(seq),
            device="cpu" if args.device == "cpu" else "cuda", bf16=args.bf16, callbacks=[Marks()],
        )  # fmt: skip
        trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(trainer.train_dataset)
        try:
            trainer.train()
        except _WindowDone:
            pass
    timed = trainer.step_sizes[args.warmup : args.warmup + args.steps]
    return window.result([(n, t, 2) for n, t in timed], flops)


# ---------------------------------------------------------------- designs and repeats


def design_table(names: list[str], extra: dict[str, dict[str, Any]]) -> dict[str, tuple[str, dict]]:
    """name -> (title, overrides) for the requested designs (reference: overrides None)."""
    known = {REFERENCE: (f"reference: {REFERENCE_TITLE}", None), **DESIGNS, **VARIANTS}
    known.update({n: (f"ours + {_overrides_text(o)}", o) for n, o in extra.items()})
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"--designs: unknown {unknown}; known: {sorted(known)} (add one with --design)")
    return {n: known[n] for n in names}


def _overrides_text(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items())


def availability(overrides: dict[str, Any] | None) -> str | None:
    """Why a design cannot run in this checkout (a config key it sets does not exist), or None."""
    from stepdistill.config import Config

    for dotted in overrides or {}:
        section, _, key = dotted.partition(".")
        model = Config.model_fields.get(section)
        fields = getattr(getattr(model, "annotation", None), "model_fields", None)
        if fields is None or key not in fields:
            return f"not available: this checkout's config has no {dotted}"
    return None


def measure_student(name: str, make_student: Callable[[], Any], anns: list, args,
                    deadline: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Every design on `make_student()` copies, repeats interleaved; one result block per batch size
    (args.batch_size). A repeat after the first starts only if it can end by `deadline`
    (time.monotonic), judged by the previous repeat's duration."""
    probe = make_student()
    kind, n_params = probe.kind, sum(p.numel() for p in probe.model.parameters())
    flop_model, tokenizer = FlopModel.from_model(probe.model, kind), probe.tokenizer
    del probe
    total = args.warmup + args.steps + 1  # + the step at whose start the window closes
    enc = {m: encode(anns, tokenizer, kind, m) for m in ("step_by_step", "standard")}
    seq = batch_sequence(
        enc["step_by_step"], args.batch_size, total, args.order_seed, args.batches == "grouped"
    )
    timed = seq[args.warmup : args.warmup + args.steps]
    designs = design_table(args.designs, args.extra_designs)
    block: dict[str, Any] = {
        "student": name, "kind": kind, "n_params": n_params, "batch_size": args.batch_size,
        "warmup": args.warmup, "steps": args.steps, "repeats_asked": args.repeats, "repeats_run": 0,
        "timed_batches": timed, "designs": {},
    }  # fmt: skip
    runnable = []
    for d, (title, over) in designs.items():
        method = (over or {}).get("train.method", "step_by_step")
        if method not in enc:
            enc[method] = encode(anns, tokenizer, kind, method)
        rows = [(len(e.source), len(e.target)) for b in timed for i in b for e in enc[method][i]]
        entry = {
            "title": title,
            "overrides": over,
            "runs": [],
            "flops_per_window": flop_model.train_flops(rows),
        }
        reason = availability(over)
        if reason is None and d != REFERENCE:
            try:
                fit_config(d, kind, over, args, total, "unused")
            except Exception as err:  # noqa: BLE001 - a bad value is reported like a missing key
                reason = f"not available: {err}"
        entry["available"] = reason is None
        if reason:
            entry["reason"] = reason
            print(f"  {name:8s} b{args.batch_size:<3d} {d:14s} {reason}", flush=True)
        else:
            runnable.append(d)
        block["designs"][d] = entry
    last = 0.0  # seconds the previous repeat took: the next starts only if it fits the budget
    for r in range(args.repeats):
        if not runnable:
            break
        if r and deadline is not None and time.monotonic() + last > deadline:
            print(f"  time budget reached: {r} of {args.repeats} repeats", flush=True)
            break
        t_repeat = time.monotonic()
        order = runnable[r % len(runnable) :] + runnable[: r % len(runnable)]  # rotate: interleaved
        for d in order:
            entry = block["designs"][d]
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    if d == REFERENCE:
                        m = run_reference(
                            make_student, enc["step_by_step"], seq, args, entry["flops_per_window"]
                        )
                    else:
                        cfg = fit_config(d, kind, entry["overrides"], args, total, tmp)
                        m = run_fit(make_student, cfg, anns, seq, args, entry["flops_per_window"])
            except Exception as err:  # noqa: BLE001 - one failing design must not lose the others
                entry["error"] = f"{type(err).__name__}: {err}"
                runnable.remove(d)
                print(f"  {name:8s} b{args.batch_size:<3d} {d:14s} failed: {entry['error']}", flush=True)
                continue
            entry["runs"].append(m)
            print(f"  {name:8s} b{args.batch_size:<3d} {d:14s} repeat {r}: {m['tokens'] / m['seconds']:9.0f} tok/s "
                  f"wall, {m['tokens'] / max(m['cpu_seconds'], 1e-9):9.0f} tok/CPU-s, "
                  f"peak {m['peak_bytes'] / 2**20:,.0f} MiB", flush=True)  # fmt: skip
            gc.collect()
        block["repeats_run"] = r + 1
        last = time.monotonic() - t_repeat
    return block


# ---------------------------------------------------------------- summary


def spread(values: list[float]) -> dict[str, float] | None:
    """Median and min-max of repeated measures."""
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(
    block: dict[str, Any], peak_tflops: float | None, ceiling_tflops: float | None
) -> dict[str, Any]:
    """Adds per design: tokens/s (wall and per CPU-second), speed-ups paired with the reference run of
    the same repeat, TFLOP/s and MFU (medians with min-max); per block: the memory ratio and whether
    every step_by_step design trained on the reference's non-padding tokens."""
    designs = block["designs"]
    ref = designs.get(REFERENCE, {}).get("runs", [])
    for d, e in designs.items():
        runs = e["runs"]
        if not runs:
            continue
        e["tokens_per_s"] = spread([m["tokens"] / m["seconds"] for m in runs])
        e["tokens_per_cpu_s"] = spread([m["tokens"] / m["cpu_seconds"] for m in runs if m["cpu_seconds"]])
        e["examples_per_s"] = spread([m["examples"] / m["seconds"] for m in runs])
        e["peak_bytes"] = spread([m["peak_bytes"] for m in runs])
        e["peak_over_start_bytes"] = spread([m["peak_over_start_bytes"] for m in runs])
        e["passes_per_step"] = runs[0]["passes_per_step"]
        pairs = list(zip(runs, ref))
        if ref and d != "standard":
            e["speedup_wall"] = spread(
                [(m["tokens"] / m["seconds"]) / (r["tokens"] / r["seconds"]) for m, r in pairs]
            )
            e["speedup_cpu"] = spread(
                [(m["tokens"] / m["cpu_seconds"]) / (r["tokens"] / r["cpu_seconds"]) for m, r in pairs
                 if m["cpu_seconds"] and r["cpu_seconds"]]
            )  # fmt: skip
        tflops = [m["flops"] / m["seconds"] / 1e12 for m in runs]
        e["achieved_tflops"] = spread(tflops)
        if peak_tflops:
            e["mfu"] = spread([t / peak_tflops for t in tflops])
        if ceiling_tflops:
            e["mfu_of_ceiling"] = spread([t / ceiling_tflops for t in tflops])
    sbs, std = designs.get("ours", {}).get("runs"), designs.get("standard", {}).get("runs")
    if sbs and std:
        over = [a["peak_over_start_bytes"] / max(1, b["peak_over_start_bytes"]) for a, b in zip(sbs, std)]
        block["memory_ratio_over_start"] = spread(over)
        block["memory_ratio_total"] = spread([a["peak_bytes"] / b["peak_bytes"] for a, b in zip(sbs, std)])
    if ref:
        want = ref[0]["tokens"]
        block["same_tokens_as_reference"] = all(
            m["tokens"] == want for d, e in designs.items() if d != "standard" for m in e["runs"]
        )
    return block


# ---------------------------------------------------------------- report


def _s(stat: dict | None, fmt: str) -> str:
    """`median (min-max)` of a spread."""
    if not stat:
        return "n/a"
    return f"{format(stat['median'], fmt)} ({format(stat['min'], fmt)}-{format(stat['max'], fmt)})"


def markdown(report: dict[str, Any]) -> str:
    info, a = report["machine"], report["args"]
    gpu = a["device"].startswith("cuda")
    goal = GOALS["gpu_speedup"] if gpu else GOALS["cpu_speedup"]
    lines = [
        "## Training speed: the real trainer (`fit`) vs the reference design",
        "",
        f"Date: {report['date'][:10]}. Machine: {info.get('gpu', 'no GPU')}; CPU {info['cpu']}, {info['cores']} "
        f"cores ({info['threads']} torch threads); torch {info['torch']}.",
        f"Command: `{report['command']}`",
        "",
        f"Reference design: {REFERENCE_TITLE} (`bench/reference_trainer.py`). SVAMP train with the PaLM "
        f"rationales; every design trained on the same fixed sequence of full, "
        f"{'length-grouped' if a.get('batches', 'grouped') == 'grouped' else 'shuffled (not length-grouped)'} batches, "
        f"{a['warmup']} untimed warm-up step(s), {a['steps']} timed steps, repeats interleaved between designs "
        f"(order rotated), {'bf16 autocast' if a['bf16'] else 'fp32'}. Figures are median (min-max) over the "
        "repeats; speed-ups pair each run with the reference run of the same repeat. Tokens = non-padding "
        "tokens (encoder inputs + targets for T5, whole sequences for decoder-only); CPU-s = CPU time of "
        f"this process, all threads. Memory: {PeakMemory(a['device']).method}, over every step of a run.",
        "",
        "| student | batch | design | passes/step | tokens/s | tokens/CPU-s | speed-up (wall) | speed-up (CPU time) "
        "| peak MiB | above start MiB | TFLOP/s |" + (" MFU |" if gpu else " of matmul ceiling |"),
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in report["results"]:
        for d, e in b["designs"].items():
            head = f"| {b['student']} | {b['batch_size']} | {d} |"
            if not e["runs"]:
                lines.append(head + f" {e.get('reason') or e.get('error') or 'not run'} |" + " |" * 8)
                continue
            mib = {
                k: {s: v / 2**20 for s, v in e[k].items()} for k in ("peak_bytes", "peak_over_start_bytes")
            }
            lines.append(
                head + f" {e['passes_per_step']:.1f} | {_s(e['tokens_per_s'], ',.0f')} | "
                f"{_s(e['tokens_per_cpu_s'], ',.0f')} | {_s(e.get('speedup_wall'), '.2f')} | "
                f"{_s(e.get('speedup_cpu'), '.2f')} | {_s(mib['peak_bytes'], ',.0f')} | "
                f"{_s(mib['peak_over_start_bytes'], ',.0f')} | {_s(e['achieved_tflops'], '.3g')} | "
                + (f"{_s(e.get('mfu'), '.1%')} |" if gpu else f"{_s(e.get('mfu_of_ceiling'), '.1%')} |")
            )
    lines += [
        "",
        "| student | batch | repeats | ours / reference, tokens/s | ours / reference, tokens per CPU-s | goal "
        "| step_by_step / standard memory above start | goal | same tokens as reference |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for b in report["results"]:
        ours = b["designs"].get("ours", {})
        lines.append(
            f"| {b['student']} | {b['batch_size']} | {b['repeats_run']} | {_s(ours.get('speedup_wall'), '.2f')} | "
            f"{_s(ours.get('speedup_cpu'), '.2f')} | >= {goal}x | {_s(b.get('memory_ratio_over_start'), '.2f')} | "
            f"<= {GOALS['memory_ratio']}x | {b.get('same_tokens_as_reference', 'n/a')} |"
        )
    ceiling = info["matmul_ceiling_tflops"]
    lines += [
        "",
        "The timed window runs from the start of the first timed step to the start of the step after the last "
        "(each start comes after that step's batch was collated), for `fit` and for the reference alike; no "
        "evaluation or checkpoint falls inside it. TFLOP/s counts the useful training FLOPs of the timed rows "
        "(`stepdistill/training/flops.py`: no padding, output projection at target tokens only, backward = "
        f"2x forward), the same work for every design. Matmul ceiling: {ceiling:.3g} TFLOP/s "
        f"({info['matmul_ceiling_shape']}, measured in this run)"
        + (
            f"; MFU divides by the card's dense bf16 datasheet peak, {info['peak_tflops']} TFLOP/s"
            if info.get("peak_tflops")
            else ""
        )
        + ". Raw numbers: `bench/results/train_speed-<device>.json`.",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- command line


def parse_design(text: str) -> tuple[str, dict[str, Any]]:
    """`packed=train.packing=true,train.batch_size=8` -> ("packed", {"train.packing": True, ...})."""
    import yaml

    name, sep, rest = text.partition("=")
    overrides = {}
    for part in rest.split(",") if sep else []:
        key, eq, value = part.partition("=")
        if not eq or "." not in key:
            raise SystemExit(f"--design {text}: each override must look like section.key=value")
        overrides[key.strip()] = yaml.safe_load(value)
    if not name or not overrides:
        raise SystemExit(f"--design {text}: expected NAME=section.key=value[,section.key=value]")
    return name.strip(), overrides


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--models", default="smollm2,t5", help="comma-separated: smollm2, t5, tiny (smoke runs)")
    p.add_argument(
        "--batch-sizes",
        "--batch-size",
        default="4,16,64",
        help="examples per step, comma-separated (the paper's)",
    )
    p.add_argument("--steps", type=int, default=20, help="timed steps per run (>= 20, or a full epoch)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first, the same for every design")
    p.add_argument("--repeats", type=int, default=3, help="runs per design, interleaved between designs")
    default_designs = ",".join([REFERENCE, *DESIGNS, *VARIANTS])
    p.add_argument("--designs", default=default_designs, help=f"which to run (default {default_designs})")
    p.add_argument("--design", action="append", default=[], metavar="NAME=section.key=value[,...]",
                   help="add a design: fit with these config overrides (repeatable)")  # fmt: skip
    p.add_argument(
        "--max-tokens-per-pass", type=int, default=1024,
        help="train.max_tokens_per_pass of the `budget` variant; 0 leaves that variant out",
    )  # fmt: skip
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--order-seed", type=int, default=0, help="seed of the batch sequence's order")
    p.add_argument(
        "--batches", choices=["grouped", "shuffled"], default="grouped",
        help="the batches every design gets: length-grouped (our trainer's) or shuffled (the reference's own)",
    )  # fmt: skip
    p.add_argument(
        "--time-budget",
        type=float,
        help="seconds; a repeat starts only if it should end within it (the first always runs)",
    )
    p.add_argument(
        "--quick", action="store_true", help="CPU check: batch 4, 1 warm-up, 3 timed steps, 3 repeats"
    )
    p.add_argument("--out", help="JSON path (default bench/results/train_speed-<device>.json)")
    p.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    p.add_argument("--section", default="train_speed", help="BENCHMARKS.md section to write")
    p.add_argument(
        "--report", metavar="JSON", help="rebuild the section from a results file (e.g. a GPU run's)"
    )
    if "--quick" in (sys.argv[1:] if argv is None else argv):  # new defaults; explicit flags still win
        p.set_defaults(batch_sizes="4", warmup=1, steps=3)  # a 135M model: seconds per step on 2 cores
    args = p.parse_args(argv)
    args.batch_list = [int(b) for b in args.batch_sizes.split(",")]
    args.designs = [d for d in args.designs.split(",") if d and (d != "budget" or args.max_tokens_per_pass)]
    if args.max_tokens_per_pass:
        VARIANTS["budget"] = (
            f"ours + train.max_tokens_per_pass={args.max_tokens_per_pass}",
            {"train.max_tokens_per_pass": args.max_tokens_per_pass},
        )
    args.extra_designs = dict(parse_design(t) for t in args.design)
    args.designs += [n for n in args.extra_designs if n not in args.designs]
    args.bf16 = args.device.startswith("cuda") and torch.cuda.is_bf16_supported()
    unknown = set(args.models.split(",")) - {"t5", "smollm2", "tiny"}
    if unknown:
        p.error(f"--models: unknown {sorted(unknown)}; allowed: t5, smollm2, tiny")
    return args


def device_ceilings(device: str) -> dict:
    """The datasheet peak (GPU, exact card name) and a matmul ceiling measured now, in the precision
    the designs ran in (bf16 on GPU, fp32 on CPU)."""
    gpu = device.startswith("cuda")
    n, dtype = (8192, torch.bfloat16) if gpu else (1024, torch.float32)
    return {
        "peak_tflops": device_peak_tflops(torch.cuda.get_device_name()) if gpu else None,
        "matmul_ceiling_tflops": measure_matmul_tflops(device, n=n, dtype=dtype),
        "matmul_ceiling_shape": f"{n}x{n}x{n} {str(dtype).removeprefix('torch.')}",
    }


def students(names: list[str]) -> dict[str, Callable[[], Any]]:
    """name -> factory of fresh copies (the weights are loaded once). `tiny`: a 2-layer random
    decoder with the SmolLM2 tokenizer, for smoke runs of the whole pipeline."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from stepdistill.training.models import Student

    model, tok = smollm2_student()  # also the tokenizer of the T5 and tiny students
    n = sum(p.numel() for p in model.parameters())
    base = {"smollm2": Student(model=model, tokenizer=tok, kind="causal", n_params=n, name="SmolLM2-135M")}
    if "t5" in names:
        base["t5"] = t5_base_student(tok)
    if "tiny" in names:
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id)  # fmt: skip
        tiny = LlamaForCausalLM(cfg)
        base["tiny"] = Student(tiny, tok, "causal", sum(p.numel() for p in tiny.parameters()), "tiny")
    return {k: (lambda s=base[k]: copy.deepcopy(s)) for k in names}


def run(args, makers: dict[str, Callable[[], Any]], anns: list, command: str) -> dict[str, Any]:
    """Every student x batch size; the report dict (also what the tests check)."""
    start = time.monotonic()
    info = machine_info(args.device)
    info.update(device_ceilings(args.device))
    blocks, jobs = [], [(s, b) for s in makers for b in args.batch_list]
    for k, (name, batch) in enumerate(jobs):
        args.batch_size = batch
        deadline = None
        if args.time_budget is not None:  # an equal share of what is left to each remaining job
            left = args.time_budget - (time.monotonic() - start)
            deadline = time.monotonic() + left / (len(jobs) - k)
        block = measure_student(name, makers[name], anns, args, deadline)
        blocks.append(summarise(block, info.get("peak_tflops"), info["matmul_ceiling_tflops"]))
    keep = ("device", "models", "batch_list", "steps", "warmup", "repeats", "designs", "extra_designs",
            "max_tokens_per_pass", "lr", "order_seed", "batches", "time_budget", "bf16")  # fmt: skip
    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": info,
        "command": command,
        "reference": REFERENCE_TITLE + " (bench/reference_trainer.py)",
        "args": {k: getattr(args, k) for k in keep},
        "n_train_examples": len(anns),
        "results": blocks,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:  # a results file brought back from another machine: table only, no training
        text = markdown(json.loads(Path(args.report).read_text()))
        print(text)
        if not args.no_write:
            write_section(args.section, text)
        return 0
    torch.manual_seed(0)
    anns = load_train_annotations("svamp")
    print(f"svamp: {len(anns)} training examples usable by every design", flush=True)
    makers = students(args.models.split(","))
    command = "python bench/train_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report = run(args, makers, anns, command.strip())
    out = (
        Path(args.out)
        if args.out
        else ROOT / "bench" / "results" / f"{args.section}-{args.device.split(':')[0]}.json"
    )
    write_json(out, report)
    text = markdown(report)
    print(text)
    print(f"wrote {out}", flush=True)
    if not args.no_write:
        write_section(args.section, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

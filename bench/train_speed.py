"""Training speed: our step-by-step trainer against the reference design, same model/data/machine.

    .venv/bin/python bench/train_speed.py --device cpu --quick          # a few minutes on 2 cores
    .venv/bin/python bench/train_speed.py --device cuda --steps 30 --batch-size 32

For each student (T5 at t5-v1_1-base size with random weights; SmolLM2-135M-Instruct from the
offline GGUF, dequantised) it trains, in this one process and on the same SVAMP examples with the
PaLM rationales:
  reference        bench/reference_trainer.py (two padded passes per step, pandas collation, HF Trainer)
  ours             stepdistill.training batching + forward_backward + AdamW: one pass per task
  standard         ours with label rows only (gold labels), to compare peak memory with step_by_step
  ours_budget      ours with train.max_tokens_per_pass (--max-tokens-per-pass) capping every pass
  standard_budget  standard under the same budget
Warm-up steps are excluded; the timed window runs from the end of the last warm-up step to the end
of the last step and includes data loading. Results go to bench/results/train_speed-<device>.json
and to the `train_speed` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import datetime as dt
import gc
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stepdistill.threads import sleep_idle_cpu_threads  # noqa: E402

sleep_idle_cpu_threads()  # before torch loads: both designs run with sleeping idle threads

import torch  # noqa: E402
from benchmarks_md import machine_info, write_section  # noqa: E402
from reference_trainer import StepTimer, build_reference_trainer, feature  # noqa: E402

from stepdistill.data.io import write_json  # noqa: E402
from stepdistill.training.flops import FlopModel, device_peak_tflops, measure_matmul_tflops  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data"
GOALS = {"cpu_speedup": 1.5, "gpu_speedup": 3.0, "mfu": 0.40, "memory_ratio": 1.3}


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


@dataclass
class Measure:
    """One design on one student: speed over the timed window after warm-up; memory over all
    steps (peak_over_start: gradients, optimizer state and activations above the weights)."""

    design: str
    student: str
    steps: int
    examples: int
    tokens: int
    seconds: float
    peak_bytes: int
    peak_over_start_bytes: int
    n_params: int
    # CPU time of this process (all threads) over the timed window: on a shared machine it is far
    # less disturbed by other users' jobs than wall time.
    cpu_seconds: float = 0.0
    passes_per_step: float = 0.0  # forward passes per step (reference: always 2)
    # Useful training FLOPs of the timed window (stepdistill.training.flops: no padding, lm_head at
    # target tokens only), the same for every design that trains on the same rows.
    flops: int = 0

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


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
    """(model, tokenizer) of SmolLM2-135M-Instruct from the offline GGUF, as a plain float32 model.

    transformers marks a GGUF-loaded model as quantized even though its weights are dequantised,
    and Trainer refuses to fine-tune such a model; rebuilding it from its config and copying the
    weights gives the ordinary model both trainers can use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stepdistill.embedded import GGUF_NAME, smollm2_dir

    tok = AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=GGUF_NAME)
    loaded = AutoModelForCausalLM.from_pretrained(smollm2_dir(), gguf_file=GGUF_NAME, dtype=torch.float32)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
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


def encode(anns: list, tokenizer, kind: str, method: str, max_tokens_per_pass: int | None = None):
    """Our trainer's encoding of the annotations under `method` (same code path as train())."""
    from stepdistill.tasks import get_task
    from stepdistill.tasks.config import TaskConfig
    from stepdistill.training.batching import encode_examples
    from stepdistill.training.config import TrainConfig
    from stepdistill.training.formatting import build_pairs

    cfg = TrainConfig(method=method, label_source="teacher", max_tokens_per_pass=max_tokens_per_pass)
    task = get_task(TaskConfig(name="svamp"))
    formatted = build_pairs(task, anns, cfg)
    if len(formatted.examples) != len(anns):
        raise RuntimeError(f"{method}: {dict(formatted.skipped)} rows unusable after filtering")
    return encode_examples(tokenizer, formatted.examples, cfg, kind), cfg


def reference_features(encoded, kind: str) -> list[dict[str, list[int]]]:
    """The reference trainer's per-example features built from OUR token ids, so both designs
    train on identical tokens (label row first, rationale row second)."""
    from stepdistill.training.batching import IGNORE

    def row(e):
        if kind == "causal":
            ids = e.source + e.target
            return ids, [1] * len(ids), [IGNORE] * len(e.source) + e.target
        return e.source, [1] * len(e.source), e.target

    return [feature(row(lab), row(rat)) for lab, rat in encoded]


# ---------------------------------------------------------------- the two designs


class _WindowCallback(StepTimer):
    """StepTimer that opens the memory window before the first step (optimizer state is allocated
    there) and notes the time when warm-up ends."""

    def __init__(self, warmup: int, mem: PeakMemory):
        super().__init__()
        self.warmup, self.mem, self.t_start, self.t_end = warmup, mem, 0.0, 0.0
        self.cpu_start, self.cpu_end = 0.0, 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.mem.start()

    def on_step_end(self, args, state, control, **kwargs):
        super().on_step_end(args, state, control, **kwargs)
        if len(self.durations) == self.warmup:
            self.t_start, self.cpu_start = time.perf_counter(), time.process_time()
        self.t_end, self.cpu_end = time.perf_counter(), time.process_time()


def _rows(examples) -> list[tuple[int, int]]:
    """(source tokens, target tokens) of every row of the examples, for FLOP accounting."""
    return [(len(e.source), len(e.target)) for ex in examples for e in ex]


def run_reference(model, tokenizer, encoded, kind: str, args, name: str) -> Measure:
    """The reference design: HF Trainer subclass, two padded passes, pandas collation. Its timed steps
    are random batches of `encoded`: their FLOPs are their tokens at the epoch's FLOPs per token."""
    mem = PeakMemory(args.device)
    cb = _WindowCallback(args.warmup, mem)
    with tempfile.TemporaryDirectory() as tmp:
        trainer, _ = build_reference_trainer(
            model, tokenizer, reference_features(encoded, kind), kind, out_dir=tmp,
            batch_size=args.batch_size, lr=args.lr, max_steps=args.warmup + args.steps,
            device="cpu" if args.device == "cpu" else "cuda", bf16=args.bf16, callbacks=[cb],
        )  # fmt: skip
        trainer.train()
    peak, over = mem.stop()
    timed = trainer.step_sizes[args.warmup :]
    rows = _rows(encoded)
    flops_per_token = FlopModel.from_model(model, kind).train_flops(rows) / sum(s + t for s, t in rows)
    tokens = sum(t for _, t in timed)
    return Measure(
        "reference", name, len(timed), sum(n for n, _ in timed), tokens,
        cb.t_end - cb.t_start, peak, over, sum(p.numel() for p in model.parameters()),
        cb.cpu_end - cb.cpu_start, 2.0, round(tokens * flops_per_token),
    )  # fmt: skip


def run_ours(model, encoded, kind: str, cfg, args, name: str, design: str, plan=None) -> Measure:
    """Our trainer's step (as in training/loop.py): length-grouped steps of label and rationale rows,
    cut into passes per task (and under cfg.max_tokens_per_pass), each pass forwarded and
    backpropagated in turn with logits only at target positions; AdamW with a linear schedule."""
    from stepdistill.training.batching import collate_step, example_length, plan_epoch
    from stepdistill.training.step import forward_backward

    device = torch.device(args.device)
    model.to(device).train()
    total = args.warmup + args.steps
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total))
    if plan is None:
        plan = plan_epoch([example_length(e) for e in encoded], args.batch_size, 0, 0, True)
    plan = (plan * math.ceil(total / len(plan)))[:total]
    pad_id = model.config.pad_token_id

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    mem, sizes, t_start, passes, flops = PeakMemory(args.device), [], 0.0, 0, 0
    flop_model = FlopModel.from_model(model, kind)
    mem.start()  # before the first step: optimizer state is allocated there
    for step, idx in enumerate(plan):
        if step == args.warmup:
            _sync(args.device)
            t_start, cpu_start = time.perf_counter(), time.process_time()
        batch = collate_step([encoded[i] for i in idx], pad_id, kind, cfg.max_tokens_per_pass).to(device)
        forward_backward(model, batch, kind, cfg, backward=lambda loss: loss.backward(), autocast=autocast)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step >= args.warmup:
            sizes.append((batch.n_examples, batch.n_tokens))
            passes += len(batch.passes)
            flops += flop_model.train_flops(_rows(encoded[i] for i in idx))
    _sync(args.device)
    seconds, cpu_seconds = time.perf_counter() - t_start, time.process_time() - cpu_start
    peak, over = mem.stop()
    return Measure(
        design, name, len(sizes), sum(n for n, _ in sizes), sum(t for _, t in sizes), seconds,
        peak, over, sum(p.numel() for p in model.parameters()), cpu_seconds, passes / max(1, len(sizes)),
        flops,
    )  # fmt: skip


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


DESIGNS = {  # design -> (label in the tables, method, uses the token budget)
    "reference": ("reference (two padded passes, full logits)", "step_by_step", False),
    "ours": ("ours, step_by_step", "step_by_step", False),
    "standard": ("ours, standard (label rows only)", "standard", False),
    "ours_budget": ("ours, step_by_step, token budget", "step_by_step", True),
    "standard_budget": ("ours, standard, token budget", "standard", True),
}


def bench_student(name: str, make: Callable[[], tuple], anns: list, args) -> list[Measure]:
    """Every design on fresh copies of the same weights, over the same steps of examples."""
    from stepdistill.training.batching import example_length, plan_epoch

    base, tokenizer, kind = make()
    budget = args.max_tokens_per_pass or None
    designs = [d for d in DESIGNS if budget or not DESIGNS[d][2]]
    encoded = {
        d: encode(anns, tokenizer, kind, DESIGNS[d][1], budget if DESIGNS[d][2] else None) for d in designs
    }
    plan = plan_epoch([example_length(e) for e in encoded["ours"][0]], args.batch_size, 0, 0, True)
    total = args.warmup + args.steps
    plan = (plan * math.ceil(total / len(plan)))[:total]
    # The reference trains one epoch over exactly the examples of these steps, in its own random
    # batches: every design sees the same examples, only the batching differs.
    used = [i for idx in plan for i in idx]
    out = []
    for design in designs:
        model = copy.deepcopy(base)
        if args.device.startswith("cuda"):
            model.to(args.device)  # weights count in the start memory, as on CPU
        enc, cfg = encoded[design]
        if design == "reference":
            m = run_reference(model, tokenizer, [enc[i] for i in used], kind, args, name)
        else:  # the same steps of examples; standard trains on their label rows only
            m = run_ours(model, enc, kind, cfg, args, name, design, plan)
        out.append(m)
        print(
            f"  {name:8s} {design:16s} {m.examples_per_s:7.2f} ex/s {m.tokens_per_s:9.0f} tok/s", flush=True
        )
        del model
        gc.collect()
    return out


# ---------------------------------------------------------------- report


def summarise(
    measures: list[Measure],
    device: str,
    n_epoch: int,
    peak_tflops: float | None = None,
    ceiling_tflops: float | None = None,
) -> list[dict]:
    """Per student: speed-ups, throughput, extrapolated epoch time, memory ratios, achieved TFLOP/s,
    MFU against the card's datasheet peak (`peak_tflops`, GPU) and against a measured matmul ceiling."""
    rows = []
    for student in dict.fromkeys(m.student for m in measures):
        by = {m.design: m for m in measures if m.student == student}
        ref = by["reference"]
        row: dict = {"student": student, "n_params": ref.n_params, "designs": {}}
        for design, m in by.items():
            d = asdict(m) | {
                "examples_per_s": m.examples_per_s,
                "tokens_per_s": m.tokens_per_s,
                "epoch_s_extrapolated": n_epoch / m.examples_per_s,
                # non-padding tokens/s: fair even where a warm-up step drew other examples
                "speedup": m.tokens_per_s / ref.tokens_per_s,
            }
            if m.cpu_seconds and ref.cpu_seconds:  # tokens per CPU-second, against the reference
                d["speedup_cpu_time"] = (m.tokens / m.cpu_seconds) / (ref.tokens / ref.cpu_seconds)
            if m.flops:
                d["achieved_tflops"] = m.flops / m.seconds / 1e12
                if peak_tflops:
                    d["mfu"] = d["achieved_tflops"] / peak_tflops
                if ceiling_tflops:
                    d["mfu_of_ceiling"] = d["achieved_tflops"] / ceiling_tflops
            row["designs"][design] = d
        for suffix in ("", "_budget"):
            sbs, std = by.get("ours" + suffix), by.get("standard" + suffix)
            if sbs and std:
                row["memory_ratio_total" + suffix] = sbs.peak_bytes / std.peak_bytes
                row["memory_ratio_over_start" + suffix] = sbs.peak_over_start_bytes / max(
                    1, std.peak_over_start_bytes
                )
        rows.append(row)
    return rows


def _mib(b: int) -> str:
    return f"{b / 2**20:,.0f}"


def markdown(rows: list[dict], info: dict, args, command: str, n_epoch: int, mem_method: str) -> str:
    gpu = args.device.startswith("cuda")
    goal = GOALS["gpu_speedup"] if gpu else GOALS["cpu_speedup"]
    budget = args.max_tokens_per_pass or None
    lines = [
        "## Training speed: our trainer vs the reference design",
        "",
        f"Date: {dt.date.today().isoformat()}. Machine: {info.get('gpu', 'no GPU')}; CPU {info['cpu']}, "
        f"{info['cores']} cores ({info['threads']} torch threads); torch {info['torch']}.",
        f"Command: `{command}`",
        "",
        f"SVAMP train with the PaLM rationales, batch size {args.batch_size} examples (each example is "
        f"a label row and a rationale row), {args.warmup} warm-up steps excluded, {args.steps} timed steps, "
        f"{'bf16 autocast' if args.bf16 else 'fp32'}. All designs ran in this one process on fresh copies "
        "of the same weights, over the same steps of examples (standard: their label rows only). Ours "
        "runs one forward+backward per task (label rows, then rationale rows, each padded to its own "
        "length)"
        + (
            f"; the token-budget rows also cap every pass at {budget} padded tokens (`train.max_tokens_per_pass`)"
            if budget
            else ""
        )
        + ". Tokens = non-padding tokens (encoder inputs + targets for T5, whole sequences for "
        f"decoder-only). Epoch time is extrapolated from the timed steps to {n_epoch} examples. "
        f"Memory: {mem_method}.",
        "",
        "| student | design | passes/step | examples/s | tokens/s | speed-up (wall) | speed-up (CPU time) "
        "| s/epoch (extrap.) | peak MiB | peak above start MiB | TFLOP/s | of matmul ceiling |"
        + (" MFU |" if gpu else ""),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if gpu else ""),
    ]
    for r in rows:
        for design, m in r["designs"].items():
            cpu_x = f"{m['speedup_cpu_time']:.2f}x" if "speedup_cpu_time" in m else "n/a"
            line = (
                f"| {r['student']} | {DESIGNS[design][0]} | {m['passes_per_step']:.1f} | "
                f"{m['examples_per_s']:.2f} | {m['tokens_per_s']:,.0f} | {m['speedup']:.2f}x | {cpu_x} | "
                f"{m['epoch_s_extrapolated']:,.0f} | {_mib(m['peak_bytes'])} | {_mib(m['peak_over_start_bytes'])} |"
            )
            line += f" {m['achieved_tflops']:.3g} |" if "achieved_tflops" in m else " n/a |"
            line += f" {m['mfu_of_ceiling']:.1%} |" if "mfu_of_ceiling" in m else " n/a |"
            lines.append(line + (f" {m['mfu']:.1%} |" if "mfu" in m else (" n/a |" if gpu else "")))
    lines += [
        "",
        "| student | speed-up of ours (step_by_step) over reference | goal "
        "| step_by_step / standard memory above start | with token budget | goal |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        with_budget = (
            f"{r['memory_ratio_over_start_budget']:.2f}x"
            if "memory_ratio_over_start_budget" in r
            else "not run"
        )
        lines.append(
            f"| {r['student']} | {r['designs']['ours']['speedup']:.2f}x | >= {goal}x | "
            f"{r['memory_ratio_over_start']:.2f}x | {with_budget} | <= {GOALS['memory_ratio']}x |"
        )
    lines += [
        "",
        "Speed-ups are ratios of non-padding tokens/s against the reference. The reference trained one "
        "epoch over exactly the examples of the timed and warm-up steps, in its own random batches. "
        "Speed-up (CPU time) divides tokens per CPU-second of this process, which other jobs on a "
        "shared machine disturb far less than wall time. Peak memory covers every step of a design "
        "(warm-up included, since AdamW allocates its state there); the memory ratio compares the "
        "peak above the memory at the start (weights resident): gradients, optimizer state and "
        "activations. Ratios of the total peaks: "
        + ", ".join(f"{r['student']} {r['memory_ratio_total']:.2f}x" for r in rows)
        + ".",
        "",
        "TFLOP/s counts the useful training FLOPs of the rows (`stepdistill/training/flops.py`: every "
        "non-embedding matmul per token of its stack, the output projection at target tokens only, "
        "causal attention pairs only, no padding; backward = 2x forward), so every design is credited "
        "with the same work for the same rows. The matmul ceiling is "
        f"{info['matmul_ceiling_tflops']:.3g} TFLOP/s, a {info['matmul_ceiling_shape']} product measured "
        "in this run on this device"
        + (
            f"; MFU divides by the card's dense bf16 datasheet peak, {info['peak_tflops']} TFLOP/s"
            if info.get("peak_tflops")
            else ("; the card's name is not in the peak table, so no datasheet MFU" if gpu else "")
        )
        + ".",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--steps", type=int, default=10, help="timed steps per design")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocator, kernels)")
    p.add_argument("--batch-size", type=int, default=8, help="examples per step")
    p.add_argument("--models", default="t5,smollm2", help="comma-separated: t5, smollm2")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument(
        "--max-tokens-per-pass", type=int, default=512,
        help="token budget of the *_budget designs (train.max_tokens_per_pass); 0 skips them",
    )  # fmt: skip
    p.add_argument("--quick", action="store_true", help="2 timed steps, 1 warm-up, batch 2")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    p.add_argument(
        "--section", default="train_speed",
        help="BENCHMARKS.md section (and results file) to write, e.g. train_speed_b4 for a second batch size",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.quick:  # a 135M model takes tens of seconds per step on 2 shared cores
        args.steps, args.warmup, args.batch_size = 2, 1, 2
    args.bf16 = args.device.startswith("cuda") and torch.cuda.is_bf16_supported()
    unknown = set(args.models.split(",")) - {"t5", "smollm2"}
    if unknown:
        p.error(f"--models: unknown {sorted(unknown)}; allowed: t5, smollm2")
    return args


def device_ceilings(args) -> dict:
    """The datasheet peak (GPU, exact card name) and a matmul ceiling measured now, in the precision
    the designs ran in (bf16 on GPU, fp32 on CPU)."""
    gpu = args.device.startswith("cuda")
    n, dtype = (8192, torch.bfloat16) if gpu else (1024, torch.float32)
    return {
        "peak_tflops": device_peak_tflops(torch.cuda.get_device_name()) if gpu else None,
        "matmul_ceiling_tflops": measure_matmul_tflops(args.device, n=n, dtype=dtype),
        "matmul_ceiling_shape": f"{n}x{n}x{n} {str(dtype).removeprefix('torch.')}",
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    anns = load_train_annotations("svamp")
    print(f"svamp: {len(anns)} training examples usable by every design", flush=True)
    smol, tok = smollm2_student()  # also provides the tokenizer of the T5 student
    makers = {
        "t5": lambda: (t5_base_model(tok), tok, "seq2seq"),
        "smollm2": lambda: (smol, tok, "causal"),
    }
    measures: list[Measure] = []
    for name in args.models.split(","):
        measures += bench_student(name, makers[name], anns, args)
    info = machine_info(args.device)
    info.update(device_ceilings(args))
    rows = summarise(measures, args.device, len(anns), info.get("peak_tflops"), info["matmul_ceiling_tflops"])
    out = ROOT / "bench" / "results" / f"{args.section}-{args.device.split(':')[0]}.json"
    write_json(out, {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": info,
                     "args": {k: v for k, v in vars(args).items()}, "results": rows})  # fmt: skip
    command = "python bench/train_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = markdown(rows, info, args, command.strip(), len(anns), PeakMemory(args.device).method)
    print(text)
    if not args.no_write:
        write_section(args.section, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

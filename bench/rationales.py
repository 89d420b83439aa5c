"""Annotation cost and teacher-vote quality against the number of samples k, on the demo task.

    .venv/bin/python bench/rationales.py [--examples 30] [--ks 1 4 8] [--compare 4]

The demo's teacher (configs/demo.yaml: the embedded SmolLM2-135M-Instruct through hf_local) annotates
the first --examples problems of the demo's training split once per k (a fresh response cache each
time, `annotate()` end to end: prompts, generation, parsing, JSONL). k > 1 samples at
annotate.sample_temperature (0.7) and reads each prompt once (teachers/hf_local.py); --compare k also
times that k on the per-sample path (each prompt read once per sample) for the ratio. From the
largest k's annotation, the vote of the first j samples against gold, for j = 1, 2, 4, ... k
(annotate.vote_by_k), and the share of problems with at least one right sample. Writes the
`rationales` section of BENCHMARKS.md. About 5 minutes for 30 problems on 2 busy cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

from benchmarks_md import write_section

from stepdistill.annotate import annotate
from stepdistill.config import load_config
from stepdistill.demo_data import demo_splits
from stepdistill.schema import Annotation
from stepdistill.tasks.arith import ArithTask
from stepdistill.teachers.config import AnnotateConfig
from stepdistill.teachers.hf_local import HFLocalTeacher

ROOT = Path(__file__).resolve().parents[1]


def timed_annotation(task, rows, cfg, k: int, teacher, prompt_once: bool = True) -> tuple[float, dict]:
    """Wall seconds and summary of one annotation of `rows` with k samples, from an empty cache."""
    teacher.prompt_once = prompt_once
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        _, summary = annotate(
            task, rows, cfg.teacher, AnnotateConfig(samples=k, progress=False), Path(tmp) / "c.sqlite",
            Path(tmp) / "train.jsonl", teacher=teacher, split="train",
        )  # fmt: skip
        return time.perf_counter() - start, summary


def section(args, times: list[dict], vote: dict | None) -> str:
    lines = ["| k | path | generations | wall s | s / generation | s / problem | parse failures |",
             "|---:|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for t in times:
        gen = t["k"] * args.examples
        lines.append(f"| {t['k']} | {t['path']} | {gen} | {t['wall_s']:.1f} | {t['wall_s'] / gen:.2f} | "
                     f"{t['wall_s'] / args.examples:.2f} | {t['parse_failures']} |")  # fmt: skip
    votes = ["| samples j | vote accuracy % | some sample right % |", "|---:|---:|---:|"]
    for j, v in (vote or {}).items():
        votes.append(f"| {j} | {100 * v['accuracy']:.1f} | {100 * v['any_correct']:.1f} |")
    head = (
        f"{date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} CPU cores (load average "
        f"{os.getloadavg()[0]:.1f} when written: above the core count, other jobs shared the cores and the "
        "seconds are upper bounds). Teacher: "
        f"configs/demo.yaml (embedded SmolLM2-135M-Instruct, hf_local, batch_size {args.batch_size}, "
        f"max_tokens 64); the first {args.examples} problems of the demo's training split; a fresh cache per row."
    )
    command = f"Command: `.venv/bin/python bench/rationales.py --examples {args.examples} --ks {' '.join(map(str, args.ks))} --compare {args.compare}`"  # noqa: E501
    tail = (
        f"Vote against k: from the k = {max(args.ks)} annotation, the majority vote of each problem's first "
        f"j samples (temperature 0.7) scored against the gold equation, and the share of the {args.examples} "
        "problems with at least one right sample among them (the problems the gold-label setting can give "
        "a correct rationale, `train.rationales: agreeing`). The greedy (k = 1) row samples nothing."
    )
    return "\n\n".join(["## Rationales: annotation cost and teacher vote against k", head, command,
                        "\n".join(lines), "\n".join(votes), tail])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=30)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument(
        "--compare", type=int, default=4, help="also time this k on the per-sample path (0: none)"
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone"
    )
    args = parser.parse_args()
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    args.batch_size = cfg.teacher.batch_size
    task = ArithTask()
    records = demo_splits(cfg.sweep.demo_data.sizes, cfg.sweep.demo_data.seed)["train"][: args.examples]
    rows = [Annotation.from_example(task.example_from_record(r, i)) for i, r in enumerate(records)]
    teacher = HFLocalTeacher.from_config(cfg.teacher)
    timed_annotation(task, rows[:2], cfg, 1, teacher)  # warm-up: loads weights, caches the exemplars
    times, vote = [], None
    runs = [(k, True) for k in args.ks] + ([(args.compare, False)] if args.compare > 1 else [])
    for k, once in runs:
        wall, summary = timed_annotation(task, rows, cfg, k, teacher, once)
        path = "greedy" if k == 1 else ("prompt read once" if once else "prompt read per sample")
        times.append({"k": k, "path": path, "wall_s": wall, "parse_failures": summary["parse_failures"]})
        print(times[-1], flush=True)
        if k == max(args.ks) and once:
            vote = summary.get("vote_by_k")
            print(vote, flush=True)
    body = section(args, times, vote)
    print(body)
    if not args.no_write:
        write_section("rationales", body)


if __name__ == "__main__":
    main()

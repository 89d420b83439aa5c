"""Ship the demo student: export to f16, q8_0 and q4_k_m GGUF, score each, time each against the teacher.

    .venv/bin/python bench/export.py                 # trains the demo's standard student first when
                                                     # runs/demo has none (~15 min on 2 busy cores)
    .venv/bin/python bench/export.py --run runs/demo --repeats 3

1. The student: the best training of a `stepdistill run configs/demo.yaml` folder (the demo's best
   method is standard fine-tuning of the 8-layer SmolLM2 cut; only it is trained when the folder
   is missing: `--sweep.methods [standard]`).
2. `stepdistill export` (export_run): f16, q8_0 and q4_k_m files, each scored on the 60 test rows
   through llama.cpp against the PyTorch student (accuracy, Δ with its paired 95% interval,
   McNemar p, changed predictions).
3. Speed, in `--repeats` rounds: each file's label-only time per example (one example at a time,
   tokenisation and decoding included, all test rows; files in rotated order), then the teacher's
   chain of thought per example on the first `--teacher-examples` test rows: the demo teacher's GGUF
   (the embedded SmolLM2) served by a llama.cpp server with the same thread count and the run's
   few-shot prompt, timed by stepdistill.run.measure_teacher through the openai_http backend. Each
   round's teacher/student ratio compares times taken under the same load: median (min-max).
   The run's own teacher_timing.json (hf_local, PyTorch) is quoted beside it.

Results: bench/results/export.json and the <!-- bench:export --> section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks_md import machine_info, write_section  # noqa: E402

from stepdistill.config import load_config  # noqa: E402
from stepdistill.data.io import write_json  # noqa: E402
from stepdistill.export.deploy import DEFAULT_FORMATS, export_run, find_training, score_file, split_rows  # noqa: E402
from stepdistill.export.llama_student import default_threads  # noqa: E402
from stepdistill.runfiles import with_annotations  # noqa: E402
from stepdistill.tasks import get_task  # noqa: E402
from stepdistill.teachers.config import TeacherConfig  # noqa: E402


def train_demo(run: Path) -> None:
    """The demo's standard student (its best method), as `make demo` trains it, in run.parent."""
    cmd = [sys.executable, "-m", "stepdistill.cli", "run", str(ROOT / "configs" / "demo.yaml")]
    cmd += ["--sweep.methods", "[standard]", "--name", run.name]
    subprocess.run(cmd, check=True, cwd=run.parent.parent)


@contextmanager
def teacher_server(threads: int) -> Iterator[str]:
    """A llama.cpp server on the demo teacher's GGUF (the embedded SmolLM2); yields its base URL."""
    from annotate_throughput import start_server

    server, url = start_server(threads)
    try:
        yield url
    finally:
        server.kill()
        server.wait()


def time_all(deploy: dict, cfg, task, rows, threads: int, repeats: int, n_teacher: int) -> dict[str, list]:
    """ms/example of each exported file (label only, all rows) and of the teacher's chain of thought
    served by llama.cpp (stepdistill.run.measure_teacher through the openai_http backend, first
    `n_teacher` rows): `repeats` rounds, files in rotated order, the teacher last in each round, so
    every round's ratios compare times taken under the same load."""
    from stepdistill.run import measure_teacher

    folder = Path(deploy["folder"])
    files = [r["format"] for r in deploy["formats"]]
    times: dict[str, list] = {f: [] for f in [*files, "teacher"]}
    with teacher_server(threads) as url:
        teacher = TeacherConfig(
            backend="openai_http",
            base_url=url,
            model="smollm2",
            endpoint="completions",
            max_tokens=cfg.teacher.max_tokens,
            concurrency=1,
        )
        teacher_cfg = cfg.model_copy(update={"teacher": teacher})
        for rep in range(repeats):
            for fmt in files[rep % len(files) :] + files[: rep % len(files)]:
                path = folder / next(r["file"] for r in deploy["formats"] if r["format"] == fmt)
                _, timing = score_file(path, task, rows, cfg, threads)
                times[fmt].append(timing["ms_per_example"])
            times["teacher"].append(measure_teacher(teacher_cfg, rows[:n_teacher]))
    return times


def spread(ms: list[float]) -> str:
    return f"{statistics.median(ms):,.1f} ({min(ms):,.1f}–{max(ms):,.1f})"


def ratios(teacher: list[dict], student: list[float]) -> str:
    """Teacher ms / student ms of each round: median (min–max)."""
    r = [t["ms_per_example"] / s for t, s in zip(teacher, student)]
    return f"{statistics.median(r):,.0f}× ({min(r):,.0f}–{max(r):,.0f})"


def section(deploy: dict, times: dict, info: dict, command: str) -> str:
    f16 = next(r for r in deploy["formats"] if r["format"] == "f16")
    teacher = times["teacher"]
    hf = deploy["teacher"] or {"ms_per_example": float("nan"), "examples": 0}
    py = deploy["pytorch"]
    lines = [
        "## Deploy: the demo student as GGUF, scored and timed (`bench/export.py`)",
        "",
        f"{dt.date.today()}, {info['cpu']}, {info['cores']} cores shared with other jobs (load average "
        f"{os.getloadavg()[0]:.1f} at the end), llama.cpp (llama-cpp-python {deploy['machine']['llama_cpp']}), "
        f"{f16['threads']} thread(s). Command: `{command}`.",
        f"Student: `{Path(deploy['run']).name}` of a `stepdistill run configs/demo.yaml --sweep.methods [standard]` "
        f"folder ({deploy['method']}, 8-layer SmolLM2 cut), {py['n']} test rows; PyTorch float32 accuracy "
        f"{100 * py['accuracy']:.2f}%. Δ: GGUF − PyTorch on the same rows, paired bootstrap 95% interval; "
        "changed: predictions that differ from the PyTorch student's. ms / example: label only, one example "
        f"at a time, all {py['n']} rows, median (min–max) of {len(teacher)} rounds; × faster: the teacher's "
        "chain of thought per example served by the same llama.cpp on the same thread count (the demo "
        f"teacher's GGUF, its few-shot prompt, first {teacher[0]['examples']} test rows), timed in the same "
        "round, median (min–max) of the rounds' ratios.",
        "",
        "| format | size MB | % of f16 | accuracy % | Δ points [95% interval] | McNemar p | changed "
        "| ms / example | examples / s | × faster than the teacher's chain of thought |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| PyTorch float32 (best/) | {py['size_bytes'] / 1e6:,.1f} | – | {100 * py['accuracy']:.2f} | – | – | – "
        f"| {py['ms_per_example']:,.1f} (batch 32, at training) | {py['examples_per_s']:,.1f} | – |",
    ]
    for r in deploy["formats"]:
        ms = statistics.median(times[r["format"]])
        lines.append(
            f"| {r['format']} | {r['size_bytes'] / 1e6:,.1f} | {100 * r['size_bytes'] / f16['size_bytes']:.0f}% "
            f"| {100 * r['accuracy']:.2f} | {100 * r['diff']:+.1f} [{100 * r['diff_lo']:+.1f}, {100 * r['diff_hi']:+.1f}] "
            f"| {r['mcnemar_p']:.3g} | {r['changed']} / {r['n']} | {spread(times[r['format']])} | {1000 / ms:,.1f} "
            f"| {ratios(teacher, times[r['format']])} |"
        )
    lines += [
        "",
        f"Teacher chain of thought per example, llama.cpp: {spread([t['ms_per_example'] for t in teacher])} ms "
        f"({teacher[0]['completion_tokens']} tokens for {teacher[0]['examples']} rows in the first round). "
        f"The run's own teacher timing (hf_local, PyTorch, {hf['examples']} rows batched, measured during "
        f"`stepdistill run` under other load): {hf['ms_per_example']:,.0f} ms. Tokenizer: llama.cpp's "
        f"embedded tokenizer gives the training tokenizer's ids on {deploy['tokenizer_agreement']['same']} "
        f"of {deploy['tokenizer_agreement']['n']} test prompts.",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default=str(ROOT / "runs" / "demo"), help="a `stepdistill run` folder")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--teacher-examples", type=int, default=4, help="test rows the teacher is timed on per round"
    )
    p.add_argument("--threads", type=int, default=default_threads())
    args = p.parse_args()
    run = Path(args.run).resolve()
    if not run.is_dir():
        train_demo(run)
    # The demo config's data paths (runs/demo/data/...) are relative to the folder holding runs/.
    os.chdir(run.parent.parent)
    deploy = export_run(run, DEFAULT_FORMATS, overwrite=True, threads=args.threads)
    training = find_training(run)
    cfg = with_annotations(load_config(training / "config.yaml"), say=None)
    task = get_task(cfg.task)
    rows = split_rows(cfg, task, "test")
    times = time_all(deploy, cfg, task, rows, args.threads, args.repeats, args.teacher_examples)
    info = machine_info("cpu")
    command = "python bench/export.py " + " ".join(sys.argv[1:])
    write_json(
        ROOT / "bench" / "results" / "export.json", {"deploy": deploy, "times": times, "machine": info}
    )
    text = section(deploy, times, info, command.strip())
    write_section("export", text)
    print(text)


if __name__ == "__main__":
    main()

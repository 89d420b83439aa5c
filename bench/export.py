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
3. Speed: each file's label-only time per example (one example at a time, tokenisation and
   decoding included) measured `--repeats` times, interleaved, order rotated: median (min-max).
   The teacher's chain of thought, per example, two ways: teacher_timing.json of the run (the
   demo's hf_local teacher, PyTorch, batched) and the same SmolLM2 GGUF the demo teaches with,
   served by a llama.cpp server with the run's few-shot prompt (stepdistill.run.measure_teacher
   through the openai_http backend), on the first test rows, with as many threads as the student.

Results: bench/results/export.json and the <!-- bench:export --> section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "teachers"))

from benchmarks_md import machine_info, write_section  # noqa: E402

from stepdistill.config import load_config  # noqa: E402
from stepdistill.data.io import write_json  # noqa: E402
from stepdistill.data.runfiles import with_annotations  # noqa: E402
from stepdistill.export.deploy import DEFAULT_FORMATS, export_run, find_training, score_file, split_rows  # noqa: E402
from stepdistill.export.llama_student import default_threads  # noqa: E402
from stepdistill.tasks import get_task  # noqa: E402
from stepdistill.teachers.config import TeacherConfig  # noqa: E402


def train_demo(run: Path) -> None:
    """The demo's standard student (its best method), as `make demo` trains it, in run.parent."""
    cmd = [sys.executable, "-m", "stepdistill.cli", "run", str(ROOT / "configs" / "demo.yaml")]
    cmd += ["--sweep.methods", "[standard]", "--name", run.name]
    subprocess.run(cmd, check=True, cwd=run.parent.parent)


def time_files(deploy: dict, cfg, task, rows, threads: int, repeats: int) -> dict[str, list[float]]:
    """ms/example of each exported file, `repeats` times, interleaved with the order rotated."""
    folder = Path(deploy["folder"])
    files = [r["format"] for r in deploy["formats"]]
    times: dict[str, list[float]] = {f: [] for f in files}
    for rep in range(repeats):
        for fmt in files[rep % len(files) :] + files[: rep % len(files)]:
            path = folder / next(r["file"] for r in deploy["formats"] if r["format"] == fmt)
            _, timing = score_file(path, task, rows, cfg, threads)
            times[fmt].append(timing["ms_per_example"])
    return times


def teacher_on_llama_cpp(cfg, rows, threads: int, n: int) -> dict[str, Any]:
    """The demo teacher's chain of thought served by llama.cpp: measure_teacher through a server."""
    from test_llama_server import free_port

    from stepdistill.embedded import smollm2_gguf
    from stepdistill.run import measure_teacher

    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(smollm2_gguf()),
        "--model_alias",
        "smollm2",
    ]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads)]
    server = subprocess.Popen(
        cmd + ["--verbose", "False"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        import httpx

        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        teacher = TeacherConfig(
            backend="openai_http",
            base_url=f"http://127.0.0.1:{port}/v1",
            model="smollm2",
            endpoint="completions",
            max_tokens=cfg.teacher.max_tokens,
            concurrency=1,
        )
        return measure_teacher(cfg.model_copy(update={"teacher": teacher}), rows[:n])
    finally:
        server.kill()
        server.wait()


def spread(ms: list[float]) -> str:
    return f"{statistics.median(ms):,.1f} ({min(ms):,.1f}–{max(ms):,.1f})"


def section(deploy: dict, times: dict, teachers: dict, info: dict, command: str) -> str:
    f16 = next(r for r in deploy["formats"] if r["format"] == "f16")
    lc = teachers["llama_cpp"]
    hf = teachers["hf_local"] or {"ms_per_example": float("nan"), "examples": 0}
    py = deploy["pytorch"]
    lines = [
        "## Deploy: the demo student as GGUF, scored and timed (`bench/export.py`)",
        "",
        f"{dt.date.today()}, {info['cpu']}, {info['cores']} cores shared with other jobs, llama.cpp "
        f"(llama-cpp-python {deploy['machine']['llama_cpp']}), {f16['threads']} thread(s). Command: `{command}`.",
        f"Student: `{deploy['run']}` ({deploy['method']}), {py['n']} test rows; PyTorch float32 accuracy "
        f"{100 * py['accuracy']:.2f}%. Δ: GGUF − PyTorch on the same rows, paired bootstrap 95% interval; "
        "changed: predictions that differ from the PyTorch student's. ms / example: label only, one example "
        f"at a time, median (min–max) of {len(next(iter(times.values())))} interleaved repeats.",
        "",
        "| format | size MB | % of f16 | accuracy % | Δ points [95% interval] | McNemar p | changed "
        "| ms / example | examples / s | × faster than teacher CoT (llama.cpp / PyTorch) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| PyTorch float32 (best/) | {py['size_bytes'] / 1e6:,.1f} | – | {100 * py['accuracy']:.2f} | – | – | – "
        f"| {py['ms_per_example']:,.1f} (batch 32) | {py['examples_per_s']:,.1f} | – |",
    ]
    for r in deploy["formats"]:
        ms = statistics.median(times[r["format"]])
        lines.append(
            f"| {r['format']} | {r['size_bytes'] / 1e6:,.1f} | {100 * r['size_bytes'] / f16['size_bytes']:.0f}% "
            f"| {100 * r['accuracy']:.2f} | {100 * r['diff']:+.1f} [{100 * r['diff_lo']:+.1f}, {100 * r['diff_hi']:+.1f}] "
            f"| {r['mcnemar_p']:.3g} | {r['changed']} / {r['n']} | {spread(times[r['format']])} | {1000 / ms:,.1f} "
            f"| {lc['ms_per_example'] / ms:,.0f}× / {hf['ms_per_example'] / ms:,.0f}× |"
        )
    lines += [
        "",
        f"Teacher chain of thought per example: {lc['ms_per_example']:,.0f} ms served by llama.cpp "
        f"({lc['examples']} test rows, {lc['completion_tokens']} tokens, {f16['threads']} thread(s)); "
        f"{hf['ms_per_example']:,.0f} ms with the run's hf_local teacher (PyTorch, {hf['examples']} rows "
        f"batched, teacher_timing.json). Tokenizer: llama.cpp's embedded tokenizer gives the training "
        f"tokenizer's ids on {deploy['tokenizer_agreement']['same']} of {deploy['tokenizer_agreement']['n']} prompts.",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default=str(ROOT / "runs" / "demo"), help="a `stepdistill run` folder")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--teacher-examples", type=int, default=8)
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
    times = time_files(deploy, cfg, task, rows, args.threads, args.repeats)
    teachers = {
        "hf_local": deploy["teacher"],
        "llama_cpp": teacher_on_llama_cpp(cfg, rows, args.threads, args.teacher_examples),
    }
    info = machine_info("cpu")
    command = "python bench/export.py " + " ".join(sys.argv[1:])
    result = {"deploy": deploy, "ms_per_example": times, "teacher": teachers, "machine": info}
    write_json(ROOT / "bench" / "results" / "export.json", result)
    write_section("export", section(deploy, times, teachers, info, command.strip()))
    print(section(deploy, times, teachers, info, command.strip()))


if __name__ == "__main__":
    main()

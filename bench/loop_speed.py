"""Single-process training speed of two source trees on identical examples (is the new loop slower?).

    .venv/bin/python bench/loop_speed.py --old /tmp/old-tree --new . --repeats 3

Both trees train the same config (`stepdistill train` in a fresh process, one process, CPU, fp32):
a random 4-layer Llama student (hidden 256, SmolLM2's 49,152-token vocabulary) on SVAMP's PaLM
rationales, step_by_step, batch 8, 30 steps, no evaluation before the end. Runs alternate
old/new so that load from other programs falls on both alike. The figure is the loop's own
clock (metrics.json train.wall_s: data, forward, backward, optimizer; not model loading or the
final evaluation); reported as median and min-max over the repeats, and the new/old ratio of the
medians. Writes the `loop_speed` section of BENCHMARKS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def make_student(out: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from stepdistill.embedded import smollm2_converted

    tok = AutoTokenizer.from_pretrained(smollm2_converted())  # the embedded model's tokenizer
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_config(tmp: Path, student: Path, steps: int, batch: int, data: Path) -> Path:
    from train_speed import load_train_annotations

    from stepdistill.data.io import write_jsonl

    anns = load_train_annotations("svamp", data)
    write_jsonl(tmp / "train.jsonl", [a.to_dict() for a in anns])
    write_jsonl(tmp / "valid.jsonl", [a.to_dict() for a in anns[:4]])
    raw = {
        "name": "speed",
        "out_dir": str(tmp / "runs"),
        "task": {"name": "svamp"},
        "data": {"train": str(tmp / "train.jsonl"), "valid": str(tmp / "valid.jsonl")},
        "student": {"model": str(student)},
        "train": {
            "method": "step_by_step",
            "batch_size": batch,
            "max_steps": steps,
            "eval_every": steps,
            "log_every": 10,
            "precision": "fp32",
            "lr": 1e-4,
        },  # fmt: skip
        "eval": {"batch_size": 4, "max_new_tokens": 4, "splits": ["valid"]},
    }
    path = tmp / "speed.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_once(tree: Path, cfg: Path, name: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    cmd = [sys.executable, "-m", "stepdistill.cli", "train", str(cfg), "--name", name]
    done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{tree}: {done.stderr[-3000:]}")
    metrics = json.loads((cfg.parent / "runs" / name / "metrics.json").read_text())
    return {"wall_s": metrics["train"]["wall_s"], "tokens_per_s": metrics["train"]["tokens_per_s"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old", required=True, help="source tree of the earlier version")
    p.add_argument("--new", default=str(ROOT), help="source tree of the new version")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--old-label", default="old")
    p.add_argument("--new-label", default="new")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="the reference data folder")
    args = p.parse_args(argv)
    trees = {"old": Path(args.old).resolve(), "new": Path(args.new).resolve()}
    results: dict[str, list[dict]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = make_config(tmp, make_student(tmp / "student"), args.steps, args.batch_size, Path(args.data))
        for i in range(args.repeats):
            for which in ("old", "new"):
                r = run_once(trees[which], cfg, f"{which}-{i}")
                results[which].append(r)
                print(which, i, r, flush=True)
    med = {k: statistics.median(r["wall_s"] for r in v) for k, v in results.items()}
    lines = [
        "## Single-process training loop: before and after the multi-process trainer",
        "",
        f"`python bench/loop_speed.py --old <tree at {args.old_label}> --new <tree at {args.new_label}> "
        f"--repeats {args.repeats}`: one process, CPU fp32, random 4-layer Llama (hidden 256, 49k vocab), "
        f"SVAMP step_by_step, batch {args.batch_size}, {args.steps} steps; loop wall time from metrics.json. "
        "Runs alternate old/new. Measured on a shared 2-core machine under load from other programs: "
        "absolute times are noisy, the ratio on identical inputs is the figure.",
        "",
        "| tree | wall s, median (min-max) | tokens/s, median |",
        "|---|---|---|",
    ]
    for which, label in (("old", args.old_label), ("new", args.new_label)):
        walls = [r["wall_s"] for r in results[which]]
        toks = statistics.median(r["tokens_per_s"] for r in results[which])
        lines.append(f"| {label} | {med[which]:.2f} ({min(walls):.2f}-{max(walls):.2f}) | {toks:.0f} |")
    lines += ["", f"new / old wall-time ratio of the medians: {med['new'] / med['old']:.3f}", ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        from benchmarks_md import write_section

        write_section("loop_speed", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

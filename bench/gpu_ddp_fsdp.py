"""One GPU, the same SmolLM2 training under DDP and under FSDP: same final loss? tokens/s, peak memory.

    python bench/gpu_ddp_fsdp.py OUT_DIR [--steps 40] [--batch-size 16]

Runs `accelerate launch --num_processes 1` twice on the same config (SmolLM2-135M-Instruct from
the embedded GGUF, SVAMP PaLM rationales, step_by_step, bf16 when the card has it), once with
configs/accelerate/ddp-1node.yaml and once with configs/accelerate/fsdp-1node.yaml, each in its own
run folder under OUT_DIR, then writes OUT_DIR/gpu_ddp_fsdp.json: per mode the last logged loss,
tokens/s and peak GPU memory (torch.cuda.max_memory_allocated, read by a child that wraps the CLI),
and whether the two final losses agree (|a - b| <= 1e-3 * |a|; bf16 and FSDP's different
reduction order allow no more). One GPU cannot show multi-GPU scaling: the figure is that both code
paths run and agree, and what FSDP's bookkeeping costs on one card.

On a machine without CUDA, `--dry-run` checks everything but the launches (configs found, data
read, command lines built) and writes the JSON with the commands only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

MODES = {"ddp": "ddp-1node.yaml", "fsdp": "fsdp-1node.yaml"}

# The child wraps the CLI so that peak memory is read in the training process itself.
CHILD = """
import json, sys, torch
from stepdistill.cli import main
rc = main(sys.argv[2:])
peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
json.dump({"rc": rc, "peak_bytes": peak}, open(sys.argv[1], "w"))
sys.exit(rc)
"""


def write_config(out: Path, steps: int, batch: int, data_root: Path) -> Path:
    from train_speed import load_train_annotations

    from stepdistill.data.io import write_jsonl

    anns = load_train_annotations("svamp", data_root)
    write_jsonl(out / "data" / "train.jsonl", [a.to_dict() for a in anns])
    write_jsonl(out / "data" / "valid.jsonl", [a.to_dict() for a in anns[:16]])
    raw = {
        "name": "ddp",
        "out_dir": str(out / "runs"),
        "task": {"name": "svamp"},
        "data": {"train": str(out / "data" / "train.jsonl"), "valid": str(out / "data" / "valid.jsonl")},
        "student": {"model": "embedded:smollm2"},
        "train": {
            "method": "step_by_step",
            "batch_size": batch,
            "max_steps": steps,
            "eval_every": steps,
            "log_every": 5,
            "lr": 5e-5,
            "precision": "auto",
            "seed": 0,
        },  # fmt: skip
        "eval": {"batch_size": 16, "max_new_tokens": 8, "splits": ["valid"]},
    }
    path = out / "gpu.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def command(mode: str, cfg: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "configs" / "accelerate" / MODES[mode]), "--num_processes", "1",
        str(out / "child.py"), str(out / f"{mode}-child.json"), "train", str(cfg), f"--name={mode}",
    ]  # fmt: skip


def last_loss(run: Path) -> float | None:
    rows = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in rows if "loss" in r]
    return losses[-1] if losses else None


def run_mode(mode: str, cfg: Path, out: Path) -> dict:
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(command(mode, cfg, out), env=env, cwd=ROOT, capture_output=True, text=True)
    (out / f"{mode}.log").write_text(done.stdout + done.stderr)
    result: dict = {"exit": done.returncode, "wall_s": time.perf_counter() - start}
    if done.returncode == 0:
        run = out / "runs" / mode
        train = json.loads((run / "metrics.json").read_text())["train"]
        child = json.loads((out / f"{mode}-child.json").read_text())
        result.update(
            final_loss=last_loss(run),
            tokens_per_s=train["tokens_per_s"],
            peak_gib=child["peak_bytes"] / 2**30 if child["peak_bytes"] else None,
            num_processes=train["num_processes"],
        )
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", help="folder for the runs and gpu_ddp_fsdp.json")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="reference data folder")
    p.add_argument("--dry-run", action="store_true", help="no launches (for machines without a GPU)")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg = write_config(out, args.steps, args.batch_size, Path(args.data))
    (out / "child.py").write_text(CHILD)
    report: dict = {"commands": {m: command(m, cfg, out) for m in MODES}, "steps": args.steps,
                    "batch_size": args.batch_size}  # fmt: skip
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device: use --dry-run", file=sys.stderr)
            return 2
        report["device"] = torch.cuda.get_device_name(0)
        report["modes"] = {m: run_mode(m, cfg, out) for m in MODES}
        a, b = (report["modes"][m].get("final_loss") for m in MODES)
        report["same_final_loss"] = a is not None and b is not None and abs(a - b) <= 1e-3 * abs(a)
    (out / "gpu_ddp_fsdp.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "commands"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

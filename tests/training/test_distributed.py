"""The same run on 1 process and on 2: real launcher subprocesses (torchrun, accelerate launch) on
CPU with gloo, compared with an in-process single-process run of the same config.

Each launch costs two Python processes importing torch and transformers, so the cases are chosen to
cover the axes between them rather than their product: causal step_by_step with a token budget and
accumulation under torchrun; seq2seq standard under accelerate launch with the shipped DDP config.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from stepdistill.config import config_from_dict
from stepdistill.data.io import iter_jsonl, write_jsonl
from stepdistill.schema import Annotation
from stepdistill.train import train
from stepdistill.training.integrity import PAUSE_ENV

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["yes", "no", "maybe"]
TASK = {"name": "generic", "input_template": "Q: {text}", "label_field": "label", "labels": LABELS}
TIMING = {"tokens_per_s", "examples_per_s", "elapsed_s"}
pytestmark = pytest.mark.slow  # launches processes


def _annotations(n: int) -> list[Annotation]:
    """Rationales of very different lengths, so per-pass or per-process means would differ from the
    step's token mean."""
    out = []
    for i in range(n):
        label = LABELS[i % 3]
        out.append(
            Annotation(
                id=f"q{i}",
                fields={"text": f"is {i} a lucky number?"},
                gold=label,
                teacher_label=label,
                teacher_rationale=" ".join(["Number", str(i), "is", "checked"] + ["again"] * (i * 3 % 11)),
                teacher_raw=f"Checked. So the answer is {label}.",
            )
        )
    return out


def _write_config(
    tmp_path: Path, student_dir: Path, name: str, n: int = 10, evaluation: dict | None = None, **train
) -> Path:
    data = tmp_path / "data" / "train.jsonl"
    if not data.exists():
        write_jsonl(data, [a.to_dict() for a in _annotations(n)])
    tc = {"method": "step_by_step", "batch_size": 4, "lr": 1e-2, "max_steps": 4, "eval_every": 2,
          "log_every": 1, "schedule": "linear", "warmup_ratio": 0.25, "precision": "fp32",
          "dist_timeout_s": 60}  # fmt: skip
    tc.update(train)
    raw = {
        "name": name,
        "out_dir": str(tmp_path / "runs"),
        "task": TASK,
        "data": {"train": str(data), "valid": str(data), "test": str(data)},
        "student": {"model": str(student_dir)},
        "train": tc,
        "eval": {"batch_size": 3, "max_new_tokens": 4, "splits": ["valid", "test"], **(evaluation or {})},
    }
    if "t5" in student_dir.name:
        raw["student"]["config_overrides"] = {"dropout_rate": 0.0}  # bitwise-free comparison needs no dropout
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def torchrun(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_port", str(_free_port()), "-m", "stepdistill.cli", *args]  # fmt: skip


def accelerate_launch(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(ROOT / "configs" / "accelerate" / "ddp-1node.yaml"),
            "--num_processes", str(nproc), "--main_process_port", str(_free_port()),
            "-m", "stepdistill.cli", *args]  # fmt: skip


def _run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "best" / "model.safetensors")


def _assert_same_weights(a: Path, b: Path, atol: float = 1e-5) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=atol, rtol=0, msg=lambda m, k=key: f"{k}: {m}")


def _log(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for _, r in iter_jsonl(run / "train_log.jsonl")]


def _files(run: Path) -> list[str]:
    """Every file of a run folder (TensorBoard's event file named by its folder: its name holds a time)."""
    names = (str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    return sorted("tb/events" if n.startswith("tb/events.") else n for n in names)


def _assert_same_run(one: Path, two: Path) -> None:
    """Same weights, same logged losses, same files, same metrics and predictions."""
    _assert_same_weights(one, two)
    l1, l2 = _log(one), _log(two)
    assert [r["step"] for r in l1] == [r["step"] for r in l2]
    for r1, r2 in zip(l1, l2):
        assert r1.keys() == r2.keys()
        for key, value in r1.items():
            if isinstance(value, str):  # per-row validation marks: the same rows right and wrong
                assert r2[key] == value, (r1["step"], key)
            else:
                assert r2[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (r1["step"], key)
    # exactly one copy of every output: one TensorBoard file, no temporary folders left behind
    assert _files(one) == _files(two) and _files(two).count("tb/events") == 1
    assert not [f for f in _files(two) if ".tmp" in f]
    for split in ("valid", "test"):
        p1 = [r for _, r in iter_jsonl(one / "predictions" / f"{split}.jsonl")]
        p2 = [r for _, r in iter_jsonl(two / "predictions" / f"{split}.jsonl")]
        assert p1 == p2
    m1, m2 = (json.loads((r / "metrics.json").read_text()) for r in (one, two))
    assert m1["splits"] == m2["splits"] and m1["best_step"] == m2["best_step"]
    assert (m1["train"]["num_processes"], m2["train"]["num_processes"]) == (1, 2)
    assert (
        m1["train"]["examples_seen"]
        == m2["train"]["examples_seen"]
        == sum(m2["train"]["examples_per_process"])
    )
    assert m1["train"]["examples_per_process"] == [m1["train"]["examples_seen"]]
    assert len(m2["train"]["examples_per_process"]) == 2


def _in_process(cfg_path: Path, name: str | None = None, **overrides) -> Path:
    """The config's run in this process (one process), under `name` when given."""
    raw = yaml.safe_load(cfg_path.read_text())
    raw["train"].update(overrides)
    raw["name"] = name or raw["name"]
    return train(config_from_dict(raw))


def test_torchrun_two_processes_equal_one_causal_step_by_step(tmp_path, tiny_causal_dir):
    # One launch for three things that split work over processes. (1) 10 examples, batch 4 x
    # accumulation 2: steps of 8 then 2 (one micro-batch of 2: one example per process), a 40-token
    # budget per pass: ranks plan different numbers of passes. (2) train.rationales: agreeing with
    # example weighting: examples carry 1 to 3 rationale rows of weight 1/n, split over the
    # processes; the step's weighted token counts are the same on both. (3) eval.label_decoding:
    # rank shards the (example, candidate) rows over the processes and gathers the scores: the same
    # validation marks, predictions and checkpoint choice as one process.
    rows = _annotations(10)
    for i, ann in enumerate(rows):
        wrong = LABELS[(i + 1) % 3]
        ann.teacher_samples = [
            {"raw": "r", "label": ann.gold, "rationale": ann.teacher_rationale, "parse_error": None},
            {"raw": "r", "label": wrong, "rationale": "A wrong turn.", "parse_error": None},
        ] + [{"raw": "r", "label": ann.gold, "rationale": f"Also {j} ways {'x ' * i}", "parse_error": None}
             for j in range(i % 3)]  # fmt: skip
    write_jsonl(tmp_path / "data" / "train.jsonl", [a.to_dict() for a in rows])
    cfg = _write_config(tmp_path, tiny_causal_dir, "two", grad_accum=2, max_tokens_per_pass=40,
                        rationales="agreeing", label_source="gold",
                        evaluation={"label_decoding": "rank"})  # fmt: skip
    _run(torchrun(2, "train", str(cfg)))
    one = _in_process(cfg, name="one")
    _assert_same_run(one, tmp_path / "runs" / "two")
    counts = json.loads((one / "metrics.json").read_text())["train"]
    assert counts["rationales_per_example"] == {"1": 4, "2": 3, "3": 3} and counts["rationale_rows"] == 19
    preds = [r["pred"] for _, r in iter_jsonl(one / "predictions" / "test.jsonl")]
    assert len(preds) == 10 and set(preds) <= set(LABELS)


def test_accelerate_launch_two_processes_equal_one_seq2seq_standard(tmp_path, tiny_seq2seq_dir):
    cfg = _write_config(tmp_path, tiny_seq2seq_dir, "two", method="standard", max_steps=3, eval_every=3)
    done = _run(accelerate_launch(2, "train", str(cfg)))
    assert "2 process(es)" in done.stdout
    one = _in_process(cfg, name="one")
    _assert_same_run(one, tmp_path / "runs" / "two")


def test_batch_size_not_divisible_fails_on_every_rank_before_training(tmp_path, tiny_causal_dir):
    cfg = _write_config(tmp_path, tiny_causal_dir, "odd", batch_size=3)
    done = subprocess.run(torchrun(2, "train", str(cfg)), env=_env(), capture_output=True, text=True,
                          timeout=300, cwd=ROOT)  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.count("train.batch_size: 3 examples per micro-batch cannot be split evenly") == 2
    assert not (tmp_path / "runs" / "odd").exists()


def test_accumulation_equals_the_larger_batch(tmp_path, tiny_causal_dir):
    """batch 8 x grad_accum 2 trains on the same steps as batch 16, with the step's token means."""
    cfg = _write_config(tmp_path, tiny_causal_dir, "acc", n=20, max_steps=3, eval_every=3)
    big = _in_process(cfg, batch_size=16, grad_accum=1)
    accumulated = _in_process(cfg, name="acc2", batch_size=8, grad_accum=2)
    _assert_same_weights(big, accumulated)
    assert [r["loss"] for r in _log(big) if "loss" in r] == pytest.approx(
        [r["loss"] for r in _log(accumulated) if "loss" in r], rel=1e-5
    )


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    import psutil

    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("LOCAL_RANK") == str(rank) and "stepdistill.cli" in " ".join(
                child.cmdline()
            ):
                return child.pid
        except psutil.Error:
            continue
    return None


def test_killed_rank_ends_the_job_and_resume_finishes_it(tmp_path, tiny_causal_dir):
    """SIGKILL of rank 1 after a checkpoint: torchrun exits non-zero within the bound; --resume (on
    ONE process: the number of processes may change) ends with the weights of an uninterrupted run."""
    train_cfg = dict(max_steps=12, eval_every=12, save_every=3, keep_checkpoints=1, log_every=3, lr=2e-3)
    cfg = _write_config(tmp_path, tiny_causal_dir, "killed", **train_cfg)
    run = tmp_path / "runs" / "killed"
    # Every checkpoint write pauses 2 s: after the first checkpoint the job runs for 6 s or more,
    # time to find rank 1 and kill it on any machine, with only 12 steps to train.
    env = {**_env(), PAUSE_ENV: "2"}
    launcher = subprocess.Popen(torchrun(2, "train", str(cfg)), env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not list((run / "checkpoints").glob("step-*")) and time.monotonic() < deadline:
            time.sleep(0.2)
        pid = _rank_pid(launcher, 1)
        assert pid is not None and launcher.poll() is None, "the run ended before it could be interrupted"
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        launcher.wait(timeout=120)
        waited = time.monotonic() - killed_at
    finally:
        if launcher.poll() is None:
            launcher.kill()
    print(f"job ended {waited:.1f} s after the kill, exit {launcher.returncode}")
    assert launcher.returncode != 0
    assert waited < 60, f"the job took {waited:.0f}s to end after a rank died"
    assert not (run / "metrics.json").exists()
    _run([sys.executable, "-m", "stepdistill.cli", "train", str(cfg), "--resume"])
    assert json.loads((run / "metrics.json").read_text())["train"]["num_processes"] == 1
    _assert_same_weights(_in_process(cfg, name="whole"), run)


def test_shipped_accelerate_configs_load(tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfgs = {p.stem: load_config_from_file(str(p)) for p in (ROOT / "configs" / "accelerate").glob("*.yaml")}
    assert set(cfgs) == {"ddp-1node", "fsdp-1node", "ddp-2nodes"}
    assert cfgs["ddp-1node"].distributed_type == "MULTI_GPU" and cfgs["ddp-1node"].num_machines == 1
    fsdp = cfgs["fsdp-1node"]
    assert fsdp.distributed_type == "FSDP" and fsdp.fsdp_config["fsdp_version"] == 2
    assert fsdp.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    two = cfgs["ddp-2nodes"]
    assert (two.num_machines, two.num_processes) == (2, 16) and two.main_process_port == 29500


def test_fsdp2_sharded_objective_equals_one_process(tmp_path, tiny_causal_dir):
    """The objective, step plan and pass loop under torch's fully_shard on 2 CPU processes give the
    weights of one unsharded process, and the gathered full state saves a from_pretrained folder.
    (accelerate's FSDP plugin itself needs GPUs; see fsdp_worker.py.)"""
    from fsdp_worker import main as worker
    from transformers import AutoModelForCausalLM

    worker(str(tiny_causal_dir), str(tmp_path / "one"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), str(ROOT / "tests" / "training" / "fsdp_worker.py"), str(tiny_causal_dir),
           str(tmp_path / "two")]  # fmt: skip
    _run(cmd)
    a, b = (
        load_file(tmp_path / "one" / "model.safetensors"),
        load_file(tmp_path / "two" / "model.safetensors"),
    )
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0, msg=lambda m, k=key: f"{k}: {m}")
    base = load_file(tiny_causal_dir / "model.safetensors")
    assert not torch.equal(base["model.layers.0.mlp.up_proj.weight"], b["model.layers.0.mlp.up_proj.weight"])
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "two").config.num_hidden_layers == 2


def test_stepdistill_run_under_torchrun(tmp_path, tiny_causal_dir):
    """The sweep launched like a training: data, teacher and report on the main process, the
    training on both; one copy of every file."""
    from stepdistill.demo_data import demo_splits

    sizes = {"train": 8, "valid": 2, "test": 2}
    rows = [{"id": r["id"], "completion": f"{r['explanation']} The answer is ( {r['answer']} )."}
            for recs in demo_splits(sizes, seed=0).values() for r in recs]  # fmt: skip
    write_jsonl(tmp_path / "teacher.jsonl", rows)
    data = tmp_path / "runs" / "t" / "data"
    raw = {
        "name": "t",
        "out_dir": str(tmp_path / "runs"),
        "task": {"name": "arith"},
        "data": {s: str(data / f"{s}.jsonl") for s in sizes},
        "teacher": {"backend": "precomputed", "path": str(tmp_path / "teacher.jsonl")},
        "annotate": {"progress": False},
        "student": {"model": str(tiny_causal_dir)},
        "train": {"batch_size": 4, "lr": 1e-2, "max_steps": 2, "eval_every": 2, "precision": "fp32"},
        "eval": {"batch_size": 2, "max_new_tokens": 4},
        "sweep": {
            "methods": ["step_by_step"],
            "seeds": [0],
            "fractions": [1.0],
            "demo_data": {"seed": 0, "sizes": sizes},
        },  # fmt: skip
        "report": {"sample_size": 2},
    }
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    done = _run(torchrun(2, "run", str(cfg)))
    assert done.stdout.count("report: ") == 1
    run = tmp_path / "runs" / "t"
    (trained,) = [p.parent for p in run.glob("*/metrics.json")]
    assert json.loads((trained / "metrics.json").read_text())["train"]["num_processes"] == 2
    assert (run / "report" / "report.html").exists() and _files(trained).count("tb/events") == 1


def test_fsdp_config_on_cpu_is_refused_not_run_as_ddp(tmp_path, tiny_causal_dir, monkeypatch):
    from stepdistill.errors import ConfigError

    cfg = _write_config(tmp_path, tiny_causal_dir, "fsdp")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` sets for an FSDP config
    with pytest.raises(ConfigError, match="FSDP, which accelerate runs on GPUs only"):
        _in_process(cfg)
    assert not (tmp_path / "runs" / "fsdp").exists()


def test_different_configs_on_two_processes_fail_on_both(tmp_path, tiny_causal_dir):
    cfg = _write_config(tmp_path, tiny_causal_dir, "mixed")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), str(ROOT / "tests" / "training" / "config_check_worker.py"), str(cfg)]  # fmt: skip
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode != 0
    for rank in (0, 1):
        assert f"rank {rank}: processes [1] loaded a different config than process 0" in done.stdout

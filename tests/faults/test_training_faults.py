"""Training-side faults in-process: a changed config on --resume, an empty validation split, ties in
validation accuracy, a full disk while writing a checkpoint / a JSONL / config.yaml, a second writer
on a run folder, a run whose training data turns out empty."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from faultkit import REPO, annotated_rows, write_train_config
from safetensors.torch import load_file

from stepdistill.cli import main
from stepdistill.config import load_config
from stepdistill.data.io import read_annotations, write_jsonl
from stepdistill.errors import ConfigError, DiskFullError
from stepdistill.tasks import get_task
from stepdistill.train import train
from stepdistill.training import integrity, selection
from stepdistill.training.checkpoint import list_checkpoints
from stepdistill.training.models import load_student
from stepdistill.training.resume_check import MISSING, config_diff, model_default

SHORT = {"max_steps": 4, "eval_every": 2, "save_every": None}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_resume_with_a_changed_config_is_refused_with_the_diff(tmp_path, tiny_causal_dir, capsys):
    cfg = write_train_config(tmp_path, tiny_causal_dir, **SHORT)
    assert main(["train", str(cfg)]) == 0
    saved = (tmp_path / "runs" / "k" / "config.yaml").read_text()
    capsys.readouterr()

    assert main(["train", str(cfg), "--resume", "--train.lr", "0.02", "--eval.batch_size", "2"]) == 2
    err = capsys.readouterr().err
    assert "error: --resume: the config differs from" in err
    assert "  eval.batch_size: 8 -> 2\n  train.lr: 0.01 -> 0.02\n" in err
    assert (tmp_path / "runs" / "k" / "config.yaml").read_text() == saved  # not overwritten

    args = ["train", str(cfg), "--resume", "--allow-config-change"]
    assert main([*args, "--train.lr", "0.02"]) == 2
    assert "train.lr would change the result" in capsys.readouterr().err
    assert main([*args, "--eval.batch_size", "2"]) == 0  # cannot alter the weights: accepted
    run = tmp_path / "runs" / "k"
    assert yaml.safe_load((run / "config.yaml").read_text())["eval"]["batch_size"] == 2
    assert (run / "config.prev.yaml").read_text() == saved


def test_config_diff_lists_leaves():
    old = {"train": {"lr": 0.1, "alpha": 0.5}, "name": "a", "kd": None}
    new = {"train": {"lr": 0.2, "alpha": 0.5}, "name": "a", "kd": {"temperature": 2}}
    assert config_diff(old, new) == [("kd", None, None), ("kd.temperature", None, 2), ("train.lr", 0.1, 0.2)]


def test_a_run_saved_with_a_removed_option_still_loads_and_resumes(tmp_path, tiny_causal_dir, capsys):
    """train.compile and train.compile_timeout_s were removed: a config.yaml an older version wrote
    (compile off) loads and resumes; one that turned compile on is refused, naming the key."""
    cfg = write_train_config(tmp_path, tiny_causal_dir, **SHORT)
    assert main(["train", str(cfg), "--train.max_steps", "2"]) == 0
    saved_path = tmp_path / "runs" / "k" / "config.yaml"
    saved = yaml.safe_load(saved_path.read_text())
    saved["train"].update(compile=False, compile_timeout_s=600.0)  # as an older version wrote it
    saved_path.write_text(yaml.safe_dump(saved))
    assert load_config(saved_path).train.max_steps == 2
    assert main(["train", str(cfg), "--resume", "--train.max_steps", "2"]) == 0
    saved["train"]["compile"] = True
    saved_path.write_text(yaml.safe_dump(saved))
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "runs" / "k")]) == 2
    assert "train.compile is no longer an option" in capsys.readouterr().err


def test_a_run_saved_before_an_option_existed_resumes_while_the_option_keeps_its_default(
    tmp_path, tiny_causal_dir, capsys
):
    cfg = write_train_config(tmp_path, tiny_causal_dir, **SHORT)
    assert main(["train", str(cfg), "--train.max_steps", "2"]) == 0
    saved_path = tmp_path / "runs" / "k" / "config.yaml"
    saved = yaml.safe_load(saved_path.read_text())
    for key in ("packing", "pack_tokens", "loss_chunk_tokens"):  # as an older version wrote it
        del saved["train"][key]
    saved_path.write_text(yaml.safe_dump(saved))
    capsys.readouterr()

    assert main(["train", str(cfg), "--resume", "--train.packing", "true"]) == 2  # not the default
    err = capsys.readouterr().err
    assert "  train.packing: None -> True\n" in err and "loss_chunk_tokens" not in err
    assert main(["train", str(cfg), "--resume", "--train.max_steps", "2"]) == 0  # missing = default

    new = load_config(cfg).model_dump(mode="json")
    default = model_default(load_config(cfg))
    assert default("train.loss_chunk_tokens") == 1024 and default("train.no_such_key") is MISSING
    assert config_diff(saved, new, default) == [("train.max_steps", 2, 4)]


def test_empty_validation_split_exports_the_last_checkpoint(tmp_path, tiny_causal_dir, capsys):
    cfg = write_train_config(tmp_path, tiny_causal_dir, **SHORT)
    (tmp_path / "data" / "empty.jsonl").write_text("")
    assert main(["train", str(cfg), "--data.valid", str(tmp_path / "data" / "empty.jsonl")]) == 0
    assert "no validation rows: best/ is the last checkpoint (step 4)" in capsys.readouterr().out
    run = tmp_path / "runs" / "k"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_step"] == 4 and metrics["selected_by"] == "last checkpoint (no validation rows)"
    best, last = _weights(run / "best"), _weights(run / "checkpoints" / "step-4")
    assert all(torch.equal(best[k], last[k]) for k in best)


def test_ties_in_accuracy_go_to_the_lower_validation_loss():
    state = {"best_step": 2, "best_valid_accuracy": 0.5, "best_valid_loss": 1.25}
    assert selection.is_better({"valid_accuracy": 0.5, "valid_loss": 1.0}, state)
    assert not selection.is_better({"valid_accuracy": 0.5, "valid_loss": 1.25}, state)  # earliest kept
    assert not selection.is_better({"valid_accuracy": 0.5, "valid_loss": 2.0}, state)
    assert selection.is_better({"valid_accuracy": 0.75, "valid_loss": 9.0}, state)
    assert not selection.is_better({"valid_accuracy": 0.25, "valid_loss": 0.1}, state)
    assert selection.is_better({"valid_accuracy": None, "valid_n": 0}, state)  # no validation: last
    assert selection.is_better({"valid_accuracy": 0.0, "valid_loss": 3.0}, {"best_step": None})


def test_validation_loss_is_the_token_weighted_training_loss(tmp_path, tiny_causal_dir):
    from stepdistill.training.batching import collate, encode_examples
    from stepdistill.training.formatting import build_pairs
    from stepdistill.training.step import Objective

    cfg = load_config(write_train_config(tmp_path, tiny_causal_dir))
    task = get_task(cfg.task)
    valid = read_annotations(tmp_path / "data" / "valid.jsonl")
    student = load_student(cfg.student, seed=0)
    pairs = build_pairs(task, valid, cfg.train)
    enc = encode_examples(student.tokenizer, pairs.examples, cfg.train, student.kind, pairs.ids)
    pad = student.tokenizer.pad_token_id
    objective = Objective(student.model, student.kind)
    one_batch = selection.valid_loss(objective, enc, "step_by_step", 0.3, pad, batch_size=len(enc))
    # four batches of one example: token-weighted, the same value
    assert selection.valid_loss(objective, enc, "step_by_step", 0.3, pad, batch_size=1) == pytest.approx(
        one_batch, rel=1e-5
    )
    # by hand: alpha * label token mean + (1 - alpha) * rationale token mean over every valid row,
    # each mean from transformers' own loss on the rows of one task
    student.model.eval()
    with torch.no_grad():
        label, rationale = (
            float(student.model(**{k: getattr(b, k) for k in ("input_ids", "attention_mask", "labels")}).loss)
            for b in (collate([[ex[t]] for ex in enc], pad, student.kind) for t in (0, 1))
        )
    assert one_batch == pytest.approx(0.3 * label + 0.7 * rationale, rel=1e-5)
    assert 0 < one_batch < 20


def test_empty_training_data_leaves_no_half_made_run_folder(tmp_path, tiny_causal_dir, capsys):
    rows = [dict(r, teacher_rationale=None, teacher_label=None) for r in annotated_rows("train", 8)]
    cfg = write_train_config(tmp_path, tiny_causal_dir, **SHORT)
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "no usable training example (8 label task: no parsed teacher label" in err
    assert not (tmp_path / "runs" / "k").exists()


# --- a full disk -----------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MiB tmpfs when this machine lets us mount one (root in a container), else None."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    ok = (
        os.geteuid() == 0
        and not os.environ.get("STEPDISTILL_TEST_NO_TMPFS")  # forces the injected-ENOSPC path
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        == 0
    )
    yield mnt if ok else None
    if ok:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(folder: Path, leave: int) -> Path:
    """Write a ballast file so that about `leave` bytes stay free."""
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    ballast = folder / "ballast"
    with open(ballast, "wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(0, free - leave))
    return ballast


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(
    tmp_path, tiny_causal_dir, small_disk, monkeypatch
):
    out = small_disk or tmp_path / "out"
    cfg = load_config(write_train_config(tmp_path, tiny_causal_dir, max_steps=2, eval_every=2, save_every=1))
    cfg.out_dir = str(out)
    if small_disk is None:  # no tmpfs here: the second checkpoint's optimizer state meets ENOSPC
        import stepdistill.training.checkpoint as ckpt

        real_save, calls = torch.save, []

        def save(obj, path, *a, **k):
            calls.append(path)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return real_save(obj, path, *a, **k)

        monkeypatch.setattr(ckpt.torch, "save", save)
    else:  # a real full disk: room for the first checkpoint, not for the second
        import stepdistill.training.checkpoint as ckpt

        real_save = ckpt.save_checkpoint

        def fill_then_save(run_dir, *args):
            if list_checkpoints(run_dir):
                _fill(small_disk, leave=1 << 20)
            return real_save(run_dir, *args)

        monkeypatch.setattr(ckpt, "save_checkpoint", fill_then_save)
    with pytest.raises(
        DiskFullError, match="disk full while writing checkpoint step-2 .*previous checkpoint is intact"
    ):
        train(cfg)
    run = out / "k"
    [(step, path)] = list_checkpoints(run)
    assert step == 1 and integrity.problem(path) is None
    assert not list((run / "checkpoints").glob(".tmp-*"))  # the partial write was removed


def test_disk_full_while_writing_jsonl_keeps_the_old_file_and_says_so(
    tmp_path, small_disk, capsys, monkeypatch
):
    folder = small_disk or tmp_path
    path = folder / "rows.jsonl"
    write_jsonl(path, [{"a": 1}])
    cfg = write_train_config(tmp_path, tmp_path, **SHORT)
    if small_disk is not None:
        _fill(small_disk, leave=0)
    else:
        import stepdistill.data.io as io_mod

        def no_space(*a, **k):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(io_mod.os, "fsync", no_space)
    with pytest.raises(OSError) as err:
        write_jsonl(path, [{"a": i, "pad": "x" * 10_000} for i in range(100)])
    assert err.value.errno == errno.ENOSPC
    assert path.read_text() == '{"a": 1}\n'  # the old file, whole
    assert [p.name for p in folder.iterdir() if p.name.startswith(".rows")] == []  # no temp file left
    # the command line says it in one line
    assert main(["train", str(cfg), "--out_dir", str(folder / "runs")]) == 2
    assert capsys.readouterr().err.startswith("error: disk full")


# --- one run folder, one writer --------------------------------------------------------------------


def test_a_second_writer_is_refused_and_a_killed_holder_frees_the_folder(tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    write_jsonl(
        data, [{"id": f"r{i}", "question": f"What is {i} + 1?", "answer": f"{i} + 1"} for i in range(5)]
    )
    teacher = tmp_path / "teacher.jsonl"
    write_jsonl(
        teacher, [{"id": f"r{i}", "completion": f"Add. The answer is ( {i} + 1 )."} for i in range(5)]
    )
    raw = {
        "name": "locked",
        "out_dir": str(tmp_path / "runs"),
        "task": {"name": "arith"},
        "data": {"train": str(data), "valid_fraction": 0.2},
        "teacher": {"backend": "precomputed", "path": str(teacher)},
        "annotate": {"progress": False},
        "sweep": {"teacher_timing_examples": 0},
    }
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    run = tmp_path / "runs" / "locked"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom stepdistill import runlock\n"
         f"with runlock.hold({str(run)!r}, 'train'):\n    print('held', flush=True); time.sleep(600)"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        for command in ("annotate", "run", "train"):
            assert main([command, str(cfg)]) == 2
            err = capsys.readouterr().err
            assert err == (
                f"error: {run} is in use by `stepdistill train` (pid {holder.pid}); wait for it to "
                "finish (or stop it), or choose another --name\n"
            ), command
    finally:
        holder.kill()
        holder.wait()
    assert main(["annotate", str(cfg)]) == 0  # the kernel released the lock of the killed holder
    assert len(read_annotations(run / "annotations" / "train.jsonl")) == 4


def test_resume_of_a_run_without_checkpoints_is_an_error(tmp_path):
    cfg = load_config(write_train_config(tmp_path, tmp_path))
    with pytest.raises(ConfigError, match="has no checkpoint to resume from"):
        train(cfg, resume=True)

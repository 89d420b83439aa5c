"""The training loop end to end on tiny models: overfitting, the run folder, exact resume, LoRA."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from stepdistill.data.io import iter_jsonl
from stepdistill.errors import ConfigError
from stepdistill.train import train_on
from stepdistill.training import checkpoint as ckpt
from stepdistill.training.config import LoraConfig

TIMING = {"tokens_per_s", "examples_per_s", "elapsed_s"}


def test_causal_student_overfits_to_full_accuracy(
    tmp_path, make_config, make_splits, tiny_causal_dir, toy_task
):
    # lr 1e-2 without decay: the 2-layer d=32 decoder memorises 4 examples in ~50 steps.
    cfg = make_config(
        tmp_path,
        tiny_causal_dir,
        method="standard",
        max_steps=60,
        eval_every=30,
        log_every=10,
        schedule="constant",
    )
    run = train_on(cfg, toy_task, make_splits())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["splits"]["test"] == {
        "accuracy": 1.0,
        "correct": 4,
        "n": 4,
        "teacher_accuracy": 1.0,
        "teacher_correct": 4,
        "teacher_n": 4,
    }
    assert metrics["best_step"] in (30, 60) and metrics["train"]["steps"] == 60
    assert metrics["student"]["kind"] == "causal" and metrics["method"] == "standard"
    assert set(metrics["latency"]) == {
        "ms_per_example",
        "examples_per_s",
        "batch_size",
        "device",
        "num_processes",
    }
    assert metrics["train"]["num_processes"] == 1
    # Run-folder contract.
    rows = [r for _, r in iter_jsonl(run / "train_log.jsonl")]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [10, 20, 30, 40, 50, 60]
    assert set(train_rows[0]) == {"step", "epoch", "loss", "label_loss", "rationale_loss", "lr", *TIMING}
    assert train_rows[-1]["loss"] < train_rows[0]["loss"] / 10
    assert [r["step"] for r in rows if "valid_accuracy" in r] == [30, 60]
    assert (run / "config.yaml").exists() and any((run / "tb").iterdir())
    assert json.loads((run / "checkpoints" / "best.json").read_text())["step"] == metrics["best_step"]
    preds = [r for _, r in iter_jsonl(run / "predictions" / "test.jsonl")]
    assert [p["pred"] for p in preds] == ["yellow", "red", "green", "purple"]
    assert all(p["correct"] and p["teacher_correct"] for p in preds)
    # best/ is a plain transformers model folder.
    model = AutoModelForCausalLM.from_pretrained(run / "best")
    assert model.config.num_hidden_layers == 2
    assert AutoTokenizer.from_pretrained(run / "best").pad_token is not None


def test_seq2seq_step_by_step_student_overfits(
    tmp_path, make_config, make_splits, tiny_seq2seq_dir, toy_task
):
    # Dropout off: at d_model 32 T5's 10% dropout slows memorisation several-fold.
    cfg = make_config(tmp_path, tiny_seq2seq_dir, max_steps=20, eval_every=10, schedule="constant")
    cfg.student.config_overrides = {"dropout_rate": 0.0}
    run = train_on(cfg, toy_task, make_splits())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["splits"]["valid"]["accuracy"] == 1.0 and metrics["splits"]["test"]["accuracy"] == 1.0
    assert metrics["student"]["kind"] == "seq2seq" and metrics["alpha"] == 0.5
    first = next(r for _, r in iter_jsonl(run / "train_log.jsonl"))
    assert first["rationale_loss"] > 0 and first["loss"] == pytest.approx(
        0.5 * first["label_loss"] + 0.5 * first["rationale_loss"], rel=1e-6
    )
    assert isinstance(AutoModelForSeq2SeqLM.from_pretrained(run / "best"), torch.nn.Module)


def _stop_after(monkeypatch, step: int) -> None:
    """Make training die right after writing the checkpoint of `step` (a simulated crash)."""
    real = ckpt.save_checkpoint

    def save_then_crash(run_dir, student, optimizer, scheduler, state):
        path = real(run_dir, student, optimizer, scheduler, state)
        if state["step"] == step:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(ckpt, "save_checkpoint", save_then_crash)


@pytest.mark.slow
@pytest.mark.parametrize("budget", [None, 40])
def test_resume_equals_uninterrupted_run(
    tmp_path, make_config, make_splits, tiny_causal_dir, toy_task, monkeypatch, budget
):
    # Dropout on, 6 examples in batches of 4 (a partial batch), accumulation, warmup + linear decay,
    # several passes per step: everything that could make a resumed run drift.
    train = dict(
        max_steps=4, eval_every=2, log_every=1, grad_accum=2, warmup_ratio=0.3, lr=5e-3,
        max_tokens_per_pass=budget,
    )  # fmt: skip
    splits = make_splits(6)
    full_cfg = make_config(tmp_path / "a", tiny_causal_dir, **train)
    full_cfg.student.config_overrides = {"attention_dropout": 0.2}
    full = train_on(full_cfg, toy_task, splits)

    cfg = make_config(tmp_path / "b", tiny_causal_dir, **train)
    cfg.student.config_overrides = {"attention_dropout": 0.2}
    with monkeypatch.context() as m:
        _stop_after(m, 2)
        with pytest.raises(KeyboardInterrupt):
            train_on(cfg, toy_task, splits)
    assert not (cfg.run_dir / "metrics.json").exists()
    with pytest.raises(ConfigError, match="--resume"):
        train_on(cfg, toy_task, splits)
    resumed = train_on(cfg, toy_task, splits, resume=True)

    def log(run):
        return [
            {k: v for k, v in r.items() if k not in TIMING} for _, r in iter_jsonl(run / "train_log.jsonl")
        ]

    assert log(resumed) == log(full) and len(log(full)) == 6
    a, b = load_file(full / "best" / "model.safetensors"), load_file(resumed / "best" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (full, resumed))
    assert ma["splits"] == mb["splits"] and ma["best_step"] == mb["best_step"]
    # 4 steps x 2 micro-batches over 6 examples in batches of 4 then 2: 4 + 2 + 4 + 2 + ...
    assert ma["train"]["examples_seen"] == mb["train"]["examples_seen"] == 4 * (4 + 2)


def test_lora_student_trains_and_saves_merged(tmp_path, make_config, make_splits, tiny_causal_dir, toy_task):
    cfg = make_config(tmp_path, tiny_causal_dir, max_steps=3, eval_every=3, lr=5e-2)
    cfg.student.lora = LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    run = train_on(cfg, toy_task, make_splits())
    best = load_file(run / "best" / "model.safetensors")
    base = load_file(tiny_causal_dir / "model.safetensors")
    assert not any("lora" in k for k in best)
    changed = {k for k in base if not torch.equal(base[k], best[k])}
    # Only the adapted projections move; the frozen rest is bit-identical.
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    assert (ckpt.latest_checkpoint(run) / "adapter.safetensors").exists()
    assert AutoModelForCausalLM.from_pretrained(run / "best").config.num_hidden_layers == 2


@pytest.mark.parametrize("tied", [True, False])
def test_frozen_embeddings_keep_their_pretrained_values(
    tmp_path, make_config, make_splits, tiny_causal_dir, toy_task, monkeypatch, tied
):
    """train.freeze_embeddings: the vocabulary matrices (one when tied, two when not) end bit-identical
    to the start and hold no optimizer state; every other weight trains; a resumed run equals an
    uninterrupted one."""
    from transformers import AutoModelForCausalLM

    model_dir = tiny_causal_dir
    if not tied:
        model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir, tie_word_embeddings=False)
        model.save_pretrained(tmp_path / "untied")
        AutoTokenizer.from_pretrained(tiny_causal_dir).save_pretrained(tmp_path / "untied")
        model_dir = tmp_path / "untied"
    start = load_file(model_dir / "model.safetensors")
    vocab = {"model.embed_tokens.weight"} | ({"lm_head.weight"} if not tied else set())
    assert vocab <= start.keys() and ("lm_head.weight" in start) == (not tied)

    cfg = make_config(tmp_path / "run", model_dir, max_steps=4, eval_every=2, lr=5e-2, freeze_embeddings=True)
    run = train_on(cfg, toy_task, make_splits())
    best = load_file(run / "best" / "model.safetensors")
    assert best.keys() == start.keys()
    assert all(torch.equal(best[k], start[k]) for k in vocab)
    assert all(not torch.equal(best[k], start[k]) for k in start if k not in vocab and start[k].ndim == 2)
    state = torch.load(ckpt.latest_checkpoint(run) / "trainer_state.pt", weights_only=True)["optimizer"]
    trained = sum(v.numel() for k, v in start.items() if k not in vocab)
    assert sum(s["exp_avg"].numel() for s in state["state"].values()) == trained

    again = make_config(
        tmp_path / "resumed", model_dir, max_steps=4, eval_every=2, lr=5e-2, freeze_embeddings=True
    )
    with monkeypatch.context() as m:
        _stop_after(m, 2)
        with pytest.raises(KeyboardInterrupt):
            train_on(again, toy_task, make_splits())
    resumed = load_file(train_on(again, toy_task, make_splits(), resume=True) / "best" / "model.safetensors")
    assert all(torch.equal(resumed[k], best[k]) for k in best)


def test_teacher_label_student_validates_on_a_split_the_teacher_did_not_annotate(
    tmp_path, make_config, make_splits, tiny_causal_dir, toy_task
):
    """A valid split read raw (no teacher labels, as in the demo) has no pairs for a teacher-label
    method's validation loss, but its accuracy against gold is still measured, so patience and model
    selection work."""
    splits = make_splits()
    splits["valid"] = [
        dataclasses.replace(row, teacher_label=None, teacher_rationale=None, teacher_raw=None)
        for row in splits["valid"]
    ]
    cfg = make_config(tmp_path, tiny_causal_dir, method="distill", max_steps=4, eval_every=2)
    run = train_on(cfg, toy_task, splits)
    evals = [r for _, r in iter_jsonl(run / "train_log.jsonl") if "valid_accuracy" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(r["valid_n"] == 4 and r["valid_accuracy"] is not None and "valid_loss" not in r for r in evals)

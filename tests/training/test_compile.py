"""train.compile: compiled training gives the eager losses; a failing or overlong compile falls back to eager."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from stepdistill.data.io import iter_jsonl
from stepdistill.train import train_on
from stepdistill.training.compile import Compiled, stacks, warm_up

TIMING = {"tokens_per_s", "examples_per_s", "elapsed_s"}
TRAIN = dict(max_steps=3, eval_every=3, log_every=1, lr=5e-3)


def _losses(run) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for _, r in iter_jsonl(run / "train_log.jsonl")]


def _train_metrics(run) -> dict:
    return json.loads((run / "metrics.json").read_text())["train"]


def _backend_that_fails(gm, example_inputs):
    raise RuntimeError("no code generator on this machine")


def test_compiled_training_gives_the_eager_losses(
    tmp_path, make_config, make_splits, tiny_causal_dir, toy_task
):
    # Inductor on CPU (it needs a C++ compiler, present wherever these tests run).
    splits = make_splits(4)
    eager = train_on(make_config(tmp_path / "eager", tiny_causal_dir, **TRAIN), toy_task, splits)
    compiled = train_on(
        make_config(tmp_path / "compiled", tiny_causal_dir, compile=True, **TRAIN), toy_task, splits
    )
    a, b = _losses(eager), _losses(compiled)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for key in ("loss", "label_loss", "rationale_loss"):
            if key in ra:
                assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-5), (ra["step"], key)
    train = _train_metrics(compiled)
    assert train["compiled"] is True and train["compile_fallback"] is None and train["compile_s"] > 0
    assert _train_metrics(eager)["compiled"] is False and _train_metrics(eager)["compile_s"] == 0.0


def test_failing_compile_falls_back_to_eager_with_identical_results(
    tmp_path, make_config, make_splits, tiny_causal_dir, toy_task, monkeypatch, capsys
):
    splits = make_splits(4)
    eager = train_on(make_config(tmp_path / "eager", tiny_causal_dir, **TRAIN), toy_task, splits)
    monkeypatch.setattr(Compiled, "backend", staticmethod(_backend_that_fails))
    fallback = train_on(
        make_config(tmp_path / "fb", tiny_causal_dir, compile=True, **TRAIN), toy_task, splits
    )
    # The warm-up's gradients are dropped and dropout is re-seeded per step: exactly the eager run.
    assert _losses(fallback) == _losses(eager)
    train = _train_metrics(fallback)
    assert train["compiled"] is False and "no code generator on this machine" in train["compile_fallback"]
    out = capsys.readouterr().out
    assert out.count("torch.compile failed, training eager") == 1


def _step(model) -> None:
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    model(input_ids=ids, labels=ids).loss.backward()


def test_warm_up_over_the_time_limit_discards_the_compiled_code(tiny_causal_dir, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir)
    monkeypatch.setattr(Compiled, "backend", "eager")  # dynamo tracing only: quick
    compiled = Compiled(model, "causal")
    report = warm_up(compiled, lambda: _step(model), timeout_s=1e-9)
    assert not report.compiled and "over train.compile_timeout_s" in report.fallback
    assert not compiled.enabled
    with compiled.active():  # disabled: the plain forward, nothing shadowing it
        assert "forward" not in vars(stacks(model, "causal")[0])


def test_active_compiles_only_inside_the_context(tiny_causal_dir, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir)
    monkeypatch.setattr(Compiled, "backend", "eager")
    compiled = Compiled(model, "causal")
    report = warm_up(compiled, lambda: _step(model), timeout_s=600)
    assert report.compiled and report.fallback is None and compiled.enabled
    decoder = stacks(model, "causal")[0]
    with compiled.active():
        assert vars(decoder)["forward"] is compiled.forwards[0]
    assert "forward" not in vars(decoder)  # evaluation and generation run the plain module


def test_seq2seq_student_compiles_both_stacks(
    tmp_path, make_config, make_splits, tiny_seq2seq_dir, toy_task, monkeypatch
):
    # aot_eager traces forward and backward as inductor does, without generating code: quick.
    monkeypatch.setattr(Compiled, "backend", "aot_eager")
    splits = make_splits(4)
    eager = train_on(make_config(tmp_path / "eager", tiny_seq2seq_dir, **TRAIN), toy_task, splits)
    compiled = train_on(
        make_config(tmp_path / "compiled", tiny_seq2seq_dir, compile=True, **TRAIN), toy_task, splits
    )
    assert _train_metrics(compiled)["compiled"] is True
    for ra, rb in zip(_losses(eager), _losses(compiled), strict=True):
        if "loss" in ra:
            assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-4, abs=1e-5)

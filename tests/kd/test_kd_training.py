"""Soft-target KD wired into the trainer: every method, weight 0 = plain loss, end-to-end runs,
label distributions on a closed label set, and precomputed targets (`kd-targets`)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from stepdistill.cli import main
from stepdistill.config import config_from_dict
from stepdistill.data.io import iter_jsonl, write_jsonl
from stepdistill.errors import ConfigError
from stepdistill.kd.config import KDConfig
from stepdistill.kd.labels import label_kd_loss, label_scores
from stepdistill.kd.soft_labels import api_distributions, student_label_scores
from stepdistill.kd.term import KDTerm
from stepdistill.kd.topk import read_topk
from stepdistill.kd.whitebox import load_teacher, teacher_target_logits
from stepdistill.schema import Annotation
from stepdistill.tasks import get_task
from stepdistill.train import train
from stepdistill.training.batching import collate, encode_examples
from stepdistill.training.config import StudentConfig, TrainConfig
from stepdistill.training.formatting import build_pairs
from stepdistill.training.models import load_student
from stepdistill.training.step import target_logits

LABELS = ["yes", "no", "maybe"]
METHODS = ["standard", "distill", "step_by_step", "single_task", "rationale_input"]
TASK = {"name": "generic", "input_template": "Q: {text}", "label_field": "label", "labels": LABELS}


def _annotations(n: int = 6) -> list[Annotation]:
    out = []
    for i in range(n):
        label = LABELS[i % 3]
        out.append(
            Annotation(
                id=f"q{i}",
                fields={"text": f"is {i} a lucky number?"},
                gold=label,
                teacher_label=label,
                teacher_rationale=f"Number {i} is checked.",
                teacher_raw=f"Number {i} is checked. So the answer is {label}.",
            )
        )
    return out


def _batch(student, method: str, annotations=None):
    task = get_task(config_from_dict({"task": TASK, "data": {"train": "x"}}).task)
    tc = TrainConfig(method=method, alpha=0.3)
    formatted = build_pairs(task, annotations or _annotations(), tc)
    enc = encode_examples(student.tokenizer, formatted.examples, tc, student.kind, formatted.ids)
    return task, tc, collate(enc, student.tokenizer.pad_token_id, student.kind), enc


@pytest.mark.parametrize("method", METHODS)
def test_kd_combines_with_every_method(method, tiny_causal_dir, teacher_dir, one_step):
    student = load_student(StudentConfig(model=str(tiny_causal_dir)))
    student.model.eval()
    task, tc, batch, enc = _batch(student, method)
    teacher, kind = load_teacher(str(teacher_dir))
    pad = student.tokenizer.pad_token_id
    plain, _ = one_step(student.model, kind, enc, tc, pad, one_pass=True)
    zero = KDTerm(KDConfig(weight=0.0), teacher=teacher, teacher_kind=kind)
    same, _ = one_step(student.model, kind, enc, tc, pad, kd_term=zero)
    term = KDTerm(KDConfig(weight=0.4, temperature=2.0), teacher=teacher, teacher_kind=kind)
    parts, _ = one_step(student.model, kind, enc, tc, pad, kd_term=term)
    assert same["loss"] == plain["loss"]  # weight 0: bit for bit the plain loss
    # Hand computation: KD over label-task tokens only, folded into the label task's loss.
    with torch.no_grad():
        at = target_logits(student.model, batch, kind)
        t_logits = teacher_target_logits(teacher, batch.input_ids, batch.attention_mask, batch.labels, kind)
    p = torch.log_softmax(t_logits / 2.0, -1)
    q = torch.log_softmax(at.logits / 2.0, -1)
    kl = (p.exp() * (p - q)).sum(-1) * 4.0
    kd_label = float(kl[at.task_ids == 0].mean())
    m = 0.3 if method == "step_by_step" else 1.0
    expect = plain["loss"] + m * 0.4 * (kd_label - plain["label_loss"])
    assert parts["loss"] == pytest.approx(expect, rel=1e-5)
    assert parts["kd_loss"] == pytest.approx(m * kd_label, rel=1e-5)
    assert parts["kd_ce_loss"] == pytest.approx(m * plain["label_loss"], rel=1e-6)


def _write_data(tmp_path, annotations=None) -> str:
    path = tmp_path / "data" / "train.jsonl"
    write_jsonl(path, [a.to_dict() for a in annotations or _annotations()])
    return str(path)


def _config(tmp_path, student_dir, kd: dict | None, method="step_by_step", name="kd", data=None):
    data = data or _write_data(tmp_path)
    raw = {
        "name": name,
        "out_dir": str(tmp_path / "runs"),
        "task": TASK,
        "data": {"train": data, "valid": data, "test": data},
        "student": {"model": str(student_dir)},
        "train": {
            "method": method,
            "batch_size": 3,
            "lr": 1e-2,
            "max_steps": 4,
            "eval_every": 4,
            "log_every": 2,
            "schedule": "constant",
        },
        "eval": {"batch_size": 8, "max_new_tokens": 4, "splits": ["test"]},
    }
    if kd is not None:
        raw["kd"] = kd
    return config_from_dict(raw)


def _train_rows(run) -> list[dict]:
    return [r for _, r in iter_jsonl(run / "train_log.jsonl") if "loss" in r]


def test_train_with_kd_end_to_end_logs_terms(tmp_path, tiny_causal_dir, teacher_dir):
    kd = {
        "teacher_model": str(teacher_dir),
        "weight": 0.5,
        "temperature": 2.0,
        "tasks": ["label", "rationale"],
    }
    run = train(_config(tmp_path, tiny_causal_dir, kd))
    rows = _train_rows(run)
    assert [r["step"] for r in rows] == [2, 4]
    for key in ("loss", "label_loss", "rationale_loss", "kd_loss", "kd_ce_loss"):
        assert all(math.isfinite(r[key]) for r in rows), key
    assert rows[0]["kd_label_loss"] > 0 and rows[0]["kd_rationale_loss"] > 0
    # kd_loss mixes the tasks like the method does (alpha 0.5)
    r = rows[0]
    assert r["kd_loss"] == pytest.approx(0.5 * r["kd_label_loss"] + 0.5 * r["kd_rationale_loss"], rel=1e-5)
    assert r["kd_ce_loss"] == pytest.approx(0.5 * r["label_loss"] + 0.5 * r["rationale_loss"], rel=1e-5)
    assert r["loss"] == pytest.approx(0.5 * r["kd_ce_loss"] + 0.5 * r["kd_loss"], rel=1e-5)
    # every trainable parameter moved
    before = load_student(StudentConfig(model=str(tiny_causal_dir))).model.state_dict()
    after = load_student(StudentConfig(model=str(run / "best"))).model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)
    assert json.loads((run / "metrics.json").read_text())["train"]["steps"] == 4


def test_kd_refuses_a_token_budget_per_pass(tmp_path, tiny_causal_dir, teacher_dir):
    raw = _config(tmp_path, tiny_causal_dir, {"teacher_model": str(teacher_dir)}).model_dump(mode="json")
    raw["train"]["max_tokens_per_pass"] = 64
    with pytest.raises(ConfigError, match="train.max_tokens_per_pass: not available with a kd: section"):
        config_from_dict(raw)  # refused when the config loads, before any model


def test_kd_rationale_only_refused_without_rationale_rows(tmp_path, tiny_causal_dir, teacher_dir):
    kd = {"teacher_model": str(teacher_dir), "tasks": ["rationale"]}
    with pytest.raises(
        ConfigError, match=r"kd.tasks \['rationale'\]: train.method 'distill' has no rationale rows"
    ):
        _config(tmp_path, tiny_causal_dir, kd, method="distill")


def test_label_distribution_matches_hand_scoring(tiny_causal_dir, teacher_dir, one_step):
    student = load_student(StudentConfig(model=str(tiny_causal_dir)))
    student.model.eval()
    task, tc, batch, enc = _batch(student, "step_by_step")
    teacher, kind = load_teacher(str(teacher_dir))
    cfg = KDConfig(label_distribution=True, weight=0.5)
    term = KDTerm.from_config(
        cfg.model_copy(update={"teacher_model": str(teacher_dir)}),
        student.tokenizer,
        student.model,
        "cpu",
        train=tc,
        task=task,
        annotations=_annotations(),
    )
    parts, _ = one_step(student.model, kind, enc, tc, student.tokenizer.pad_token_id, kd_term=term)
    with torch.no_grad():
        # by hand: full-logits scoring of " yes"/" no"/" maybe" (label + eos) after each label prompt
        tok = student.tokenizer
        cands = [tok(lab, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for lab in LABELS]
        prompts = [
            tok("predict: Q: " + a.fields["text"])["input_ids"]
            + tok("\n", add_special_tokens=False)["input_ids"]
            for a in _annotations()
        ]
        s_scores = label_scores(student.model, kind, prompts, cands, tok.pad_token_id)
        t_probs = torch.softmax(label_scores(teacher, kind, prompts, cands, tok.pad_token_id), -1)
        gathered = student_label_scores(student.model, kind, prompts, cands, tok.pad_token_id)
    assert gathered.tolist() == [pytest.approx(r, abs=1e-4) for r in s_scores.tolist()]
    p, q = t_probs, torch.softmax(s_scores, -1)
    hand = float((p * (p.log() - q.log())).sum(-1).mean())
    assert parts["kd_loss"] == pytest.approx(0.3 * hand, rel=1e-4)  # alpha 0.3
    assert hand > 0
    expect = 0.3 * (0.5 * parts["label_loss"] + 0.5 * hand) + 0.7 * parts["rationale_loss"]
    assert parts["loss"] == pytest.approx(expect, rel=1e-5)
    assert len(term.soft_labels.cache) == 6  # teacher scored once per example


def _entry(token: str, p: float, top=()):
    return {"token": token, "logprob": math.log(p), "top": [[t, math.log(q)] for t, q in top]}


def test_label_distribution_from_api_logprobs_trains(tmp_path, tiny_causal_dir):
    anns = _annotations()
    for a in anns[:4]:  # the last two have none: they get no label-distribution term
        a.teacher_logprobs = [
            _entry("So", 0.9),
            _entry(" the answer is", 0.9),
            _entry(" " + a.teacher_label, 0.6, [(" " + a.teacher_label, 0.6), (" maybe", 0.3)]),
        ]
    task = get_task(config_from_dict({"task": TASK, "data": {"train": "x"}}).task)
    dists, missing = api_distributions(task, anns)
    assert missing == 2 and dists["q0"].tolist() == pytest.approx([0.6, 0.1, 0.3])
    assert dists["q1"].tolist() == pytest.approx([0.1, 0.6, 0.3])  # unlisted mass to unlisted labels
    data = _write_data(tmp_path, anns)
    kd = {"label_distribution": True, "label_distribution_from": "annotations", "weight": 0.5}
    run = train(_config(tmp_path, tiny_causal_dir, kd, method="distill", data=data))
    rows = _train_rows(run)
    assert all(r["kd_loss"] > 0 and math.isfinite(r["loss"]) for r in rows)
    assert label_kd_loss(torch.zeros(1, 3), torch.full((1, 3), 1 / 3)).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_targets_round_trip_equals_online_teacher(tmp_path, tiny_causal_dir, teacher_dir, one_step):
    vocab = 49152  # every token kept: the stored targets are the teacher's full distribution
    kd = {
        "teacher_model": str(teacher_dir),
        "tasks": ["label", "rationale"],
        "topk": vocab,
        "temperature": 2.0,
    }
    cfg = _config(tmp_path, tiny_causal_dir, kd)
    cfg_path = tmp_path / "kd.yaml"
    cfg_path.write_text(json.dumps(cfg.model_dump(mode="json")))  # JSON is YAML
    assert main(["kd-targets", str(cfg_path)]) == 0
    path = tmp_path / "data" / "train.topk.safetensors"
    f = read_topk(path)
    assert len(f) == 12 and f.k == vocab  # 6 examples x (label, rationale)

    student = load_student(StudentConfig(model=str(tiny_causal_dir)))
    student.model.eval()
    _, tc, batch, enc = _batch(student, "step_by_step")
    online = KDTerm.from_config(cfg.kd, student.tokenizer, student.model, "cpu", train=tc)
    stored_cfg = cfg.kd.model_copy(update={"source": "topk_file", "topk_file": str(path)})
    stored = KDTerm.from_config(stored_cfg, student.tokenizer, student.model, "cpu", train=tc)
    a, _ = one_step(student.model, "causal", enc, tc, student.tokenizer.pad_token_id, kd_term=online)
    b, _ = one_step(student.model, "causal", enc, tc, student.tokenizer.pad_token_id, kd_term=stored)
    for key in ("kd_label_loss", "kd_rationale_loss", "loss"):
        assert b[key] == pytest.approx(a[key], rel=2e-3), key


def test_kd_targets_from_api_logprobs(tmp_path, tiny_causal_dir, smol_tokenizer):
    anns = _annotations(3)
    for a in anns[:2]:
        ids = smol_tokenizer(a.teacher_raw, add_special_tokens=False)["input_ids"]
        a.teacher_logprobs = [
            _entry(smol_tokenizer.decode([i]), 0.7, [(smol_tokenizer.decode([i]), 0.7), (" banana", 0.1)])
            for i in ids
        ]
    cfg = _config(tmp_path, tiny_causal_dir, None, data=_write_data(tmp_path, anns))
    from stepdistill.kd_targets import kd_targets

    path = kd_targets(cfg, source="annotations", out=str(tmp_path / "api.topk.safetensors"))
    f = read_topk(path)
    # rationales are found in the completions; the labels are " yes" there but "yes" for the student
    assert sorted(f.index) == ["q0\trationale", "q1\trationale"]
    assert f.skipped == {"q0\tlabel", "q1\tlabel", "q2\tlabel", "q2\trationale"}
    rationale = smol_tokenizer(anns[0].teacher_rationale, add_special_tokens=False)["input_ids"]
    t = f.get("q0\trationale")
    assert t.ids[:, 0].tolist() == rationale
    banana = smol_tokenizer(" banana", add_special_tokens=False)["input_ids"][0]
    assert t.ids[:, 1].tolist() == [banana] * len(rationale)
    assert t.logprobs[0, :2].tolist() == pytest.approx([math.log(0.7), math.log(0.1)], abs=1e-3)
    # training on it: skipped rows get no KD term, the rest do
    kd = {"source": "topk_file", "topk_file": str(path), "tasks": ["rationale"], "weight": 0.5}
    run = train(_config(tmp_path, tiny_causal_dir, kd, name="api", data=cfg.data.train))
    assert all(r["kd_loss"] >= 0 and math.isfinite(r["loss"]) for r in _train_rows(run))

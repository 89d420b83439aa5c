"""On-policy distillation (kd.on_policy): the student samples its KD rows, the teacher scores them.

Every test name holds `on_policy`, so `pytest -k on_policy` selects them.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from stepdistill.config import config_from_dict
from stepdistill.data.io import iter_jsonl, write_jsonl
from stepdistill.errors import ConfigError
from stepdistill.kd.config import KDConfig
from stepdistill.kd.on_policy import OnPolicyTerm, is_on_policy_step, newline_ids, sample
from stepdistill.kd.term import KDTerm
from stepdistill.kd.whitebox import load_teacher
from stepdistill.schema import Annotation
from stepdistill.tasks import get_task
from stepdistill.train import train
from stepdistill.training import checkpoint as ckpt
from stepdistill.training.batching import IGNORE, encode_examples, encode_source, shard_step
from stepdistill.training.config import StudentConfig, TrainConfig
from stepdistill.training.device import make_accelerator
from stepdistill.training.formatting import build_pairs
from stepdistill.training.models import load_student
from stepdistill.training.step import Objective, step_weights

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["yes", "no", "maybe"]
TASK = {"name": "generic", "input_template": "Q: {text}", "label_field": "label", "labels": LABELS}
TIMING = {"tokens_per_s", "examples_per_s", "elapsed_s"}


def _annotations(n: int = 6) -> list[Annotation]:
    return [
        Annotation(
            id=f"q{i}",
            fields={"text": f"is {i} a lucky number?"},
            gold=LABELS[i % 3],
            teacher_label=LABELS[i % 3],
            teacher_rationale=" ".join(["Number", str(i), "is", "checked"] + ["again"] * (i % 4)),
            teacher_raw=f"Checked. So the answer is {LABELS[i % 3]}.",
        )
        for i in range(n)
    ]


def _raw(tmp_path: Path, student_dir: Path, kd: dict | None, name: str = "op", **train_cfg) -> dict:
    data = tmp_path / "data" / "train.jsonl"
    if not data.exists():
        write_jsonl(data, [a.to_dict() for a in _annotations()])
    tc = {"method": "step_by_step", "alpha": 0.4, "batch_size": 2, "lr": 1e-2, "max_steps": 4,
          "eval_every": 4, "log_every": 1, "schedule": "constant", "precision": "fp32",
          "dist_timeout_s": 60}  # fmt: skip
    tc.update(train_cfg)
    raw = {
        "name": name,
        "out_dir": str(tmp_path / "runs"),
        "task": TASK,
        "data": {"train": str(data), "valid": str(data), "test": str(data)},
        "student": {"model": str(student_dir)},
        "train": tc,
        "eval": {"batch_size": 6, "max_new_tokens": 4, "splits": ["test"]},
    }
    if kd is not None:
        raw["kd"] = kd
    return raw


def _kd(teacher_dir: Path, **on_policy) -> dict:
    kd = {
        "teacher_model": str(teacher_dir),
        "weight": 0.6,
        "temperature": 2.0,
        "tasks": ["label", "rationale"],
    }
    if on_policy:
        kd["on_policy"] = {"max_new_tokens": 5, **on_policy}
    return kd


def _log(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for _, r in iter_jsonl(run / "train_log.jsonl")]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "best" / "model.safetensors")


def _train_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())["train"]


# --- configuration ---------------------------------------------------------------------------


def test_on_policy_config_refuses_topk_file_and_label_distributions(tmp_path, tiny_causal_dir):
    raw = _raw(tmp_path, tiny_causal_dir, {"source": "topk_file", "topk_file": "t.safetensors",
                                           "on_policy": {"lmbda": 1.0}})  # fmt: skip
    with pytest.raises(ConfigError, match="kd.on_policy: kd.source 'topk_file'.*cannot score"):
        config_from_dict(raw)
    raw["kd"] = {"teacher_model": "t", "label_distribution": True, "on_policy": {}}
    with pytest.raises(ConfigError, match="kd.on_policy: kd.label_distribution"):
        config_from_dict(raw)
    raw["kd"] = {"teacher_model": "t", "on_policy": {"lmbda": 1.5}}
    with pytest.raises(ConfigError, match="lmbda"):
        config_from_dict(raw)
    on = config_from_dict({**raw, "kd": {"teacher_model": "t", "on_policy": {}}}).kd.on_policy
    assert (on.lmbda, on.sample_temperature, on.max_new_tokens) == (1.0, 1.0, None)


def test_on_policy_teacher_with_another_tokenizer_refused_naming_both(tmp_path, tiny_causal_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    other = tmp_path / "other-teacher"
    tok = AutoTokenizer.from_pretrained(tiny_causal_dir)
    tok.add_tokens(["<tool_call_token>"])
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir)
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(other)
    tok.save_pretrained(other)
    cfg = config_from_dict(_raw(tmp_path, tiny_causal_dir, _kd(other, lmbda=1.0)))
    with pytest.raises(ConfigError) as err:
        train(cfg)
    message = str(err.value)
    assert f"teacher vocabulary '{other}' (49153 tokens)" in message
    assert f"student vocabulary '{tiny_causal_dir}' (49152 tokens)" in message
    assert ckpt.latest_checkpoint(cfg.run_dir) is None  # refused before any step


# --- the step, by hand -------------------------------------------------------------------------


def _one_step(student, teacher, kind, method: str, kd: dict, max_new_tokens: int = 5):
    """A one-process optimizer step of all 6 examples, sampled by the on-policy term, as the loop runs it."""
    task = get_task(config_from_dict({"task": TASK, "data": {"train": "x"}}).task)
    tc = TrainConfig(method=method, alpha=0.4, seed=3)
    cfg = KDConfig(teacher_model="t", **kd, on_policy={"max_new_tokens": max_new_tokens})
    term = OnPolicyTerm(KDTerm(cfg, teacher=teacher, teacher_kind=kind), tc, student.tokenizer,
                        student.model, kind)  # fmt: skip
    formatted = build_pairs(task, _annotations(), tc)
    enc = encode_examples(student.tokenizer, formatted.examples, tc, kind, formatted.ids)
    plan = shard_step([enc], 0, 1, student.tokenizer.pad_token_id, kind, None, split=False)
    objective = Objective(student.model, kind, term)
    totals: dict = {}
    sampled, flops = term.sample_step(make_accelerator("fp32", 60), objective, plan, 7, totals)
    return objective, sampled, totals, flops, tc


def _hand_terms(student, teacher, batch, tau: float):
    """Per-token CE over the data's rows, and teacher / student log-probs over the sampled rows, from
    full forwards (no trainer code)."""
    labels = batch.labels[:, 1:]
    s_logits = student.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    with torch.no_grad():
        t_logits = teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    is_target = labels != IGNORE
    own = is_target & batch.sampled[:, None]
    data = is_target & ~batch.sampled[:, None]
    ce = torch.nn.functional.cross_entropy(s_logits[data], labels[data], reduction="none")
    logq = torch.log_softmax(s_logits[own] / tau, -1)
    logp = torch.log_softmax(t_logits[own] / tau, -1)
    return ce, logp, logq


@pytest.mark.parametrize("beta,reference", [(0.0, "forward"), (1.0, "reverse")])
def test_on_policy_jsd_beta_endpoints_equal_hand_kl_on_sampled_tokens(
    tiny_causal_dir, teacher_dir, beta, reference
):
    """GKD's generalized JSD: beta 0 is KL(teacher || student), beta 1 KL(student || teacher),
    on the tokens the student sampled; the data's rows keep (1 - w) * CE."""
    student = load_student(StudentConfig(model=str(tiny_causal_dir)))
    teacher, kind = load_teacher(str(teacher_dir))
    kd = {"loss": "jsd", "jsd_beta": beta, "temperature": 2.0, "weight": 0.6}
    objective, plan, totals, flops, tc = _one_step(student, teacher, kind, "distill", kd)
    (batch, real), = plan.micro[0]  # fmt: skip
    assert real and int(batch.sampled.sum()) == 6 and batch.input_ids.shape[0] == 12
    weights = step_weights("distill", tc.alpha, plan.counts)
    student.model.eval()  # no dropout: the hand forward must see the same student
    out = objective(batch, weights)
    ce, logp, logq = _hand_terms(student, teacher, batch, 2.0)
    p, q = logp.exp(), logq.exp()
    kl = (p * (logp - logq)).sum(-1) if reference == "forward" else (q * (logq - logp)).sum(-1)
    kd_hand = 4.0 * kl.mean().detach()  # T^2
    n_sampled = plan.counts.n_sampled_label_tokens
    assert n_sampled == logp.shape[0] == totals["sampled_tokens"]
    assert float(out.sums["kd_label"]) / n_sampled == pytest.approx(float(kd_hand), rel=1e-5)
    expect = 0.4 * ce.mean().detach() + 0.6 * kd_hand  # (1 - w) * CE over the data + w * KD over the samples
    assert float(out.total) == pytest.approx(float(expect), rel=1e-5)
    assert float(out.sums["label"]) / plan.counts.n_label_tokens == pytest.approx(float(ce.mean()), rel=1e-5)


def test_on_policy_gradients_reach_only_the_student_not_sampling_or_teacher(tiny_causal_dir, teacher_dir):
    student = load_student(StudentConfig(model=str(tiny_causal_dir)))
    teacher, kind = load_teacher(str(teacher_dir))
    kd = {"loss": "reverse_kl", "temperature": 2.0, "weight": 0.6, "tasks": ["label", "rationale"]}
    student.model.train()
    objective, plan, totals, _, tc = _one_step(student, teacher, kind, "step_by_step", kd)
    # Sampling ran in eval mode under no_grad and put the student back in training mode.
    assert student.model.training and all(p.grad is None for p in student.model.parameters())
    (batch, _), = plan.micro[0]  # fmt: skip
    student.model.eval()
    out = objective(batch, step_weights("step_by_step", tc.alpha, plan.counts))
    out.total.backward()
    got = {n: p.grad.clone() for n, p in student.model.named_parameters()}
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(g.abs().sum() > 0 for g in got.values())
    # The same loss written by hand with the sampled ids as constants: the same gradients, so no
    # gradient flows anywhere but through the student's logits.
    student.model.zero_grad(set_to_none=True)
    c = plan.counts
    ce, logp, logq = _hand_terms(student, teacher, batch, 2.0)
    labels = batch.labels[:, 1:]
    rows = (labels != IGNORE).nonzero(as_tuple=True)[0]
    is_label = batch.task_ids[rows] == 0
    own = batch.sampled[rows]
    data_label = is_label[~own]
    kl = (logq.exp() * (logq - logp)).sum(-1) * 4.0
    s_label = is_label[own]
    hand = 0.4 * (
        0.4 * ce[data_label].sum() / c.n_label_tokens + 0.6 * kl[s_label].sum() / c.n_sampled_label_tokens
    )
    hand = hand + 0.6 * (
        0.4 * ce[~data_label].sum() / c.n_rationale_tokens
        + 0.6 * kl[~s_label].sum() / c.n_sampled_rationale_tokens
    )
    hand.backward()
    for name, p in student.model.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=1e-4, atol=1e-7, msg=name)


def test_on_policy_sample_cut_at_max_new_tokens_is_scored_and_counted(tiny_causal_dir, teacher_dir):
    student = load_student(StudentConfig(model=str(tiny_causal_dir)))
    teacher, kind = load_teacher(str(teacher_dir))
    kd = {"loss": "forward_kl", "weight": 0.5, "tasks": ["label", "rationale"]}
    objective, plan, totals, flops, tc = _one_step(
        student, teacher, kind, "step_by_step", kd, max_new_tokens=3
    )
    (batch, _), = plan.micro[0]  # fmt: skip
    eos = student.tokenizer.eos_token_id
    samples = [row[row != IGNORE].tolist() for row in batch.labels[batch.sampled]]
    cut = [len(s) == 3 and eos not in s for s in samples]
    assert len(samples) == 12 and all(len(s) <= 3 for s in samples)
    assert sum(cut) > 0 and totals["truncated"] == sum(cut) and totals["samples"] == 12
    student.model.eval()
    out = objective(batch, step_weights("step_by_step", tc.alpha, plan.counts))
    # every sampled token, cut or not, is scored: the KD sums run over all of them
    kd = objective.kd_term.token_targets(batch, _targets_of(student, batch))
    assert int(kd.valid.sum()) == totals["sampled_tokens"] == sum(len(s) for s in samples)
    assert math.isfinite(float(out.total)) and float(out.sums["kd_label"]) > 0
    assert flops == totals["generation_flops"] + totals["train_flops"] == 4 * totals["generation_flops"]


def _targets_of(student, batch):
    from stepdistill.training.step import target_hidden

    return target_hidden(student.model, batch, "causal")


def test_on_policy_sample_of_a_row_does_not_depend_on_its_batch_mates(tiny_causal_dir, smol_tokenizer):
    student = load_student(StudentConfig(model=str(tiny_causal_dir)))
    tc = TrainConfig()
    sources = [
        encode_source(smol_tokenizer, t, tc, "causal")
        for t in ("predict: Q: a", "explain: Q: a much longer one")
    ]
    kwargs = dict(pad_id=smol_tokenizer.pad_token_id, eos_id=smol_tokenizer.eos_token_id,
                  newlines=newline_ids(smol_tokenizer, 49152), temperature=1.0, max_new_tokens=6)  # fmt: skip
    both = sample(student.model, "causal", sources, [11, 22], [True, False], **kwargs)
    alone = sample(student.model, "causal", sources[1:], [22], [False], **kwargs)
    again = sample(student.model, "causal", sources[1:], [23], [False], **kwargs)
    assert both.tokens[1] == alone.tokens[0] and again.tokens[0] != alone.tokens[0]


def test_on_policy_label_rows_stop_at_their_line_end(tiny_causal_dir, smol_tokenizer, memorise):
    student = load_student(StudentConfig(model=str(tiny_causal_dir)))
    memorise(student, "predict: Q: colour?", "red\nbecause roses are red", steps=80)
    source = encode_source(smol_tokenizer, "predict: Q: colour?", TrainConfig(), "causal")
    kwargs = dict(pad_id=smol_tokenizer.pad_token_id, eos_id=smol_tokenizer.eos_token_id,
                  newlines=newline_ids(smol_tokenizer, 49152), temperature=0.01, max_new_tokens=12)  # fmt: skip
    out = sample(student.model, "causal", [source, source], [1, 2], [True, False], **kwargs)
    assert smol_tokenizer.decode(out.tokens[0]) == "red\n"  # a label row: the label's line
    whole = smol_tokenizer.decode(out.tokens[1], skip_special_tokens=True)
    assert whole == "red\nbecause roses are red" and out.tokens[1][-1] == smol_tokenizer.eos_token_id
    assert out.truncated == [False, False]


def test_on_policy_lmbda_is_the_share_of_steps_decided_per_step():
    picks = [is_on_policy_step(0, s, 0.5) for s in range(2000)]
    assert 0.45 < sum(picks) / 2000 < 0.55 and picks == [is_on_policy_step(0, s, 0.5) for s in range(2000)]
    assert not any(is_on_policy_step(0, s, 0.0) for s in range(100))
    assert all(is_on_policy_step(0, s, 1.0) for s in range(100))


# --- training runs ----------------------------------------------------------------------------


@pytest.mark.slow
def test_on_policy_lmbda_zero_reproduces_off_policy_kd(tmp_path, tiny_causal_dir, teacher_dir):
    off = train(config_from_dict(_raw(tmp_path, tiny_causal_dir, _kd(teacher_dir), name="off")))
    zero = train(config_from_dict(_raw(tmp_path, tiny_causal_dir, _kd(teacher_dir, lmbda=0.0), name="zero")))
    wa, wb = _weights(off), _weights(zero)
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=1e-6, rtol=0)
    la, lb = _log(off), _log(zero)
    assert len(la) == len(lb) == 5
    for ra, rb in zip(la, lb):
        assert ra.keys() == rb.keys()
        assert all(
            rb[k] == pytest.approx(v, rel=1e-6, abs=1e-9) for k, v in ra.items() if not isinstance(v, str)
        )
    assert _train_metrics(off)["train_flops"] == _train_metrics(zero)["train_flops"]
    assert _train_metrics(zero)["on_policy"] == {}  # no step sampled


@pytest.mark.slow
def test_on_policy_run_charges_sampling_and_resumes_bit_identical(
    tmp_path, tiny_causal_dir, teacher_dir, monkeypatch
):
    kd = _kd(teacher_dir, lmbda=0.5)
    full = train(config_from_dict(_raw(tmp_path / "a", tiny_causal_dir, kd, max_steps=6, eval_every=3)))
    cfg = config_from_dict(_raw(tmp_path / "b", tiny_causal_dir, kd, max_steps=6, eval_every=3))
    real = ckpt.save_checkpoint

    def save_then_crash(run_dir, student, optimizer, scheduler, state):
        path = real(run_dir, student, optimizer, scheduler, state)
        if state["step"] == 3:
            raise KeyboardInterrupt
        return path

    with monkeypatch.context() as m:
        m.setattr(ckpt, "save_checkpoint", save_then_crash)
        with pytest.raises(KeyboardInterrupt):
            train(cfg)
    resumed = train(cfg, resume=True)
    assert _log(resumed) == _log(full)
    wa, wb = _weights(full), _weights(resumed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ma, mb = _train_metrics(full), _train_metrics(resumed)
    op = ma["on_policy"]
    assert 0 < op["steps"] < 6 and {k: v for k, v in op.items() if k != "generation_s"} == {
        k: v for k, v in mb["on_policy"].items() if k != "generation_s"
    }
    assert op["generation_s"] > 0 and op["samples"] == 4 * op["steps"]  # 2 examples x 2 tasks a step
    # train_flops = the data's rows + the sampling and the sampled rows' training
    off = train(
        config_from_dict(_raw(tmp_path / "c", tiny_causal_dir, _kd(teacher_dir), max_steps=6, eval_every=3))
    )
    charged = _train_metrics(off)["train_flops"] + op["generation_flops"] + op["train_flops"]
    assert ma["train_flops"] == mb["train_flops"] == charged
    evals = [r for r in _log(full) if "valid_accuracy" in r]
    assert evals[-1]["train_flops"] == ma["train_flops"]  # the curve the report reads is charged too


# --- several processes --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_on_policy_torchrun_two_processes_equal_one(tmp_path, tiny_causal_dir, teacher_dir):
    # 6 examples, batch 4: steps of 4 then 2; each process samples its own rows.
    raw = _raw(tmp_path, tiny_causal_dir, _kd(teacher_dir, lmbda=1.0), name="two", batch_size=4, max_steps=3,
               eval_every=3)  # fmt: skip
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "stepdistill.cli", "train", str(path)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    one = train(config_from_dict({**raw, "name": "one"}))
    two = tmp_path / "runs" / "two"
    wa, wb = _weights(one), _weights(two)
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=1e-5, rtol=0)
    la, lb = _log(one), _log(two)
    assert [r["step"] for r in la] == [r["step"] for r in lb]
    for ra, rb in zip(la, lb):
        assert all(
            rb[k] == pytest.approx(v, rel=1e-5, abs=1e-7) for k, v in ra.items() if not isinstance(v, str)
        )
    m1, m2 = _train_metrics(one), _train_metrics(two)
    assert (m1["num_processes"], m2["num_processes"]) == (1, 2)
    same = (
        "steps",
        "samples",
        "truncated",
        "sampled_tokens",
        "generation_flops",
        "train_flops",
        "teacher_flops",
    )
    assert {k: m1["on_policy"][k] for k in same} == {k: m2["on_policy"][k] for k in same}
    assert m1["on_policy"]["samples"] == 2 * (4 + 2 + 4) and m1["train_flops"] == m2["train_flops"]

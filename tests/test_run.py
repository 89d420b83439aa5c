"""`stepdistill run` end to end on a tiny student: demo data, real annotation (precomputed teacher),
real trainings, the report; then a second run that reuses every stage."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import stepdistill.annotate
import stepdistill.run_parallel
import stepdistill.train
from stepdistill.cli import main
from stepdistill.config import config_from_dict, load_config
from stepdistill.data.io import write_jsonl
from stepdistill.demo_data import demo_splits
from stepdistill.errors import ConfigError
from stepdistill.run import measure_teacher, run, training_config
from stepdistill.run_plan import plan
from stepdistill.schema import Annotation
from stepdistill.teachers.base import Completion, Teacher

SIZES = {"train": 16, "valid": 4, "test": 6}


def _teacher_file(path: Path) -> None:
    """Precomputed completions: right for every example except every third, where the teacher errs."""
    rows = []
    for recs in demo_splits(SIZES, seed=0).values():
        for i, rec in enumerate(recs):
            answer = rec["answer"] if i % 3 else f"{rec['answer']} + 1"
            rows.append({"id": rec["id"], "completion": f"{rec['explanation']} The answer is ( {answer} )."})
    write_jsonl(path, rows)


def _config(tmp_path: Path, model_dir: Path, **train):
    data = tmp_path / "runs" / "t" / "data"
    return config_from_dict(
        {
            "name": "t",
            "out_dir": str(tmp_path / "runs"),
            "task": {"name": "arith"},
            "data": {s: str(data / f"{s}.jsonl") for s in SIZES},
            "teacher": {"backend": "precomputed", "path": str(tmp_path / "teacher.jsonl")},
            "annotate": {"progress": False},
            "student": {"model": str(model_dir)},
            "train": {"batch_size": 4, "lr": 1e-2, "max_steps": 2, "eval_every": 2, **train},
            "eval": {"batch_size": 8, "max_new_tokens": 6},
            "sweep": {
                "methods": ["standard", "step_by_step"],
                "seeds": [0],
                "fractions": [1.0, 0.5],
                "demo_data": {"seed": 0, "sizes": SIZES},
            },
            "report": {"sample_size": 4},
        }
    )


@pytest.fixture
def counters(monkeypatch):
    """Count calls to the annotate and train stages (the real functions still run)."""
    calls = {"annotate": 0, "train": 0}
    real_annotate, real_train = stepdistill.annotate.annotate_from_config, stepdistill.train.train

    def annotate(cfg):
        calls["annotate"] += 1
        return real_annotate(cfg)

    def train(cfg, resume=False, **kwargs):
        calls["train"] += 1
        return real_train(cfg, resume=resume, **kwargs)

    monkeypatch.setattr(stepdistill.annotate, "annotate_from_config", annotate)
    monkeypatch.setattr(stepdistill.train, "train", train)
    return calls


@pytest.mark.slow
def test_run_end_to_end_then_reuse(tmp_path, tiny_causal_dir, counters):
    _teacher_file(tmp_path / "teacher.jsonl")
    cfg = _config(tmp_path, tiny_causal_dir)
    before = plan(cfg)
    assert before[1] == "demo data: to write (seed 0, sizes {'train': 16, 'valid': 4, 'test': 6})"
    assert before[2] == "annotate: to do: teacher precomputed:(default), splits train, valid, test"
    assert before[3:7] == [
        f"train {name}: to do"
        for name in ("standard-f1-s0", "step_by_step-f1-s0", "standard-f0.5-s0", "step_by_step-f0.5-s0")
    ]
    assert before[-1] == "4 trainings: 0 done, 0 to resume, 4 to start; each at most 2 steps"
    assert not (tmp_path / "runs" / "t").exists()  # the plan wrote nothing
    report = run(cfg)
    run_dir = tmp_path / "runs" / "t"
    assert report == run_dir / "report" / "report.html"
    assert counters == {"annotate": 1, "train": 4}
    names = sorted(p.parent.name for p in run_dir.glob("*/metrics.json"))
    assert names == sorted(
        f"{m}-f{f}-s{s}" for m in ("standard", "step_by_step") for f in ("1", "0.5") for s in (0,)
    )
    # every training read the annotated files and its own fraction of the 16 training rows
    half = json.loads((run_dir / "step_by_step-f0.5-s0" / "metrics.json").read_text())
    assert (half["method"], half["seed"], half["train_fraction"]) == ("step_by_step", 0, 0.5)
    assert half["train"]["examples"] == 8
    summary = json.loads((run_dir / "annotations" / "summary.json").read_text())
    # teacher wrong on ids 0, 3 of the 6 test examples
    assert summary["splits"]["test"]["teacher_correct"] == 4
    assert half["splits"]["test"]["teacher_accuracy"] == pytest.approx(4 / 6)
    md = (run_dir / "report" / "report.md").read_text()
    assert "| step_by_step (teacher labels) | 0.5 |" in md and "66.67" in md
    assert md.count("### demo-test-") == 4

    mtimes = {p: p.stat().st_mtime_ns for p in run_dir.glob("*/metrics.json")}
    mtimes[run_dir / "annotations" / "train.jsonl"] = (
        (run_dir / "annotations" / "train.jsonl").stat().st_mtime_ns
    )
    run(cfg)
    assert counters == {"annotate": 1, "train": 4}
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    after = plan(cfg)
    assert after[1:3] == ["demo data: written", f"annotate: done ({run_dir / 'annotations'} reused)"]
    assert after[-1].startswith("4 trainings: 4 done, 0 to resume, 0 to start")
    changed = plan(_config(tmp_path, tiny_causal_dir, lr=5e-3))
    assert "train standard-f1-s0: done, with another config (the run refuses it)" in changed

    # a changed training config must not silently reuse the old trainings
    with pytest.raises(ConfigError, match="trained with a different config"):
        run(_config(tmp_path, tiny_causal_dir, lr=5e-3))


def test_plan_names_the_step_an_interrupted_training_resumes_at(tmp_path):
    cfg = _config(tmp_path, tmp_path / "model", max_steps=40, patience=3)
    ckpt = tmp_path / "runs" / "t" / "step_by_step-f1-s0" / "checkpoints" / "step-20"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    lines = plan(cfg)
    assert "train step_by_step-f1-s0: resumes at step 20" in lines
    assert lines[-1] == (
        "4 trainings: 0 done, 1 to resume, 3 to start; each at most 40 steps, "
        "or fewer: stops after 3 validations without progress"
    )


def test_training_config_points_at_annotations(tmp_path):
    cfg = _config(tmp_path, tmp_path / "model")
    files = {"train": "a/train.jsonl", "valid": "a/valid.jsonl", "test": None}
    sub = training_config(cfg, "distill", 0.25, 3, files)
    assert sub.run_dir == tmp_path / "runs" / "t" / "distill-f0.25-s3"
    assert (sub.train.method, sub.train.seed, sub.data.train_fraction) == ("distill", 3, 0.25)
    assert (sub.data.train, sub.data.valid, sub.data.test) == ("a/train.jsonl", "a/valid.jsonl", None)
    assert sub.sweep.methods == ["step_by_step"]  # the sweep does not recurse
    assert sub.train.lr == cfg.train.lr and sub.student == cfg.student


def test_sweep_entries_set_the_label_weight_schedule(tmp_path):
    raw = _config(tmp_path, tmp_path / "model").model_dump(mode="json")
    raw["sweep"]["methods"] = [
        "step_by_step",
        {"method": "step_by_step", "alpha_schedule": "linear", "alpha": 0.5, "alpha_end": 1.0},
        {"method": "step_by_step", "alpha": 0.8},
    ]
    cfg = config_from_dict(raw)
    files = {"train": "a/train.jsonl", "valid": "a/valid.jsonl", "test": None}
    subs = [training_config(cfg, m, 1.0, 0, files) for m in cfg.sweep.methods]
    assert [s.run_dir.name for s in subs] == [
        "step_by_step-f1-s0",
        "step_by_step-linear-alpha0.5-to1-f1-s0",
        "step_by_step-alpha0.8-f1-s0",
    ]
    assert [(s.train.alpha_schedule, s.train.alpha, s.train.alpha_end) for s in subs] == [
        ("constant", 0.5, 1.0),
        ("linear", 0.5, 1.0),
        ("constant", 0.8, 1.0),
    ]
    raw["sweep"]["methods"] = [{"method": "step_by_step", "alpha": 1.5}]
    with pytest.raises(ConfigError, match=r"sweep.methods.*alpha"):
        config_from_dict(raw)


def test_sweep_rejects_unknown_methods(tmp_path):
    raw = _config(tmp_path, tmp_path / "m").model_dump(mode="json")
    raw["sweep"]["methods"] = ["standard", "magic"]
    with pytest.raises(ConfigError, match=r"sweep.methods: .*unknown method\(s\) \['magic'\]"):
        config_from_dict(raw)


def test_demo_config_plans_both_of_the_papers_settings():
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    assert cfg.teacher.backend == "hf_local" and cfg.teacher.model == "embedded:smollm2"
    assert cfg.sweep.demo_data is not None and set(cfg.sweep.demo_data.sizes) == {"train", "valid", "test"}
    assert not cfg.annotate.gold_filter  # the teacher-label setting needs every teacher label
    files = {"train": "runs/demo/annotations/train.jsonl", "valid": cfg.data.valid, "test": "t.jsonl"}
    subs = [training_config(cfg, m, 1.0, 0, files) for m in cfg.sweep.methods]
    assert [s.run_dir.name for s in subs] == [
        "standard-f1-s0",
        "step_by_step-gold-filtered-f1-s0",
        "distill-f1-s0",
        "step_by_step-teacher-f1-s0",
    ]
    assert [(s.train.method, s.train.label_source, s.train.gold_filter) for s in subs[1::2]] == [
        ("step_by_step", "gold", True),
        ("step_by_step", "teacher", False),
    ]
    assert all(s.student.keep_layers == cfg.student.keep_layers for s in subs)
    assert subs[0].run_dir == Path("runs/demo/standard-f1-s0")


class _FakeTeacher(Teacher):
    """Bookkeeping only: answers every prompt with a fixed 5-token completion."""

    identity = "fake:teacher"

    def __init__(self):
        self.calls: list[int] = []
        self.closed = False

    async def stream(self, jobs, sampling):
        self.calls.append(len(jobs))
        for job in jobs:
            yield job, Completion(text="4 - 1 = 3. The answer is ( 4 - 1 ).", completion_tokens=5)

    def close(self):
        self.closed = True


def test_measure_teacher_warms_up_then_times_all_examples(tmp_path, monkeypatch):
    import stepdistill.teachers.registry

    fake = _FakeTeacher()
    monkeypatch.setattr(stepdistill.teachers.registry, "make_teacher", lambda cfg: fake)
    cfg = _config(tmp_path, tmp_path / "m")
    cfg = cfg.model_copy(update={"report": cfg.report.model_copy(update={"teacher_params": 540e9})})
    examples = [Annotation(id=f"e{i}", fields={"question": f"Ann has {i} pens."}) for i in range(3)]
    timing = measure_teacher(cfg, examples)
    assert fake.calls == [1, 3] and fake.closed  # one warm-up prompt, then the timed batch
    assert timing["examples"] == timing["succeeded"] == 3 and timing["completion_tokens"] == 15
    assert timing["ms_per_example"] == pytest.approx(1000 * timing["wall_s"] / 3, rel=1e-3, abs=1e-2)
    assert timing["params"] == 540e9 and timing["teacher_model"] == "fake:teacher"


@pytest.mark.slow
def test_student_size_sweep_with_tiny_students(tmp_path, tiny_causal_dir, tiny_seq2seq_dir):
    """sweep.students: the tiny decoder cut to 1 of its 2 layers, the whole decoder, and a T5 by path;
    every method trains on each, and the report plots accuracy against size and latency."""
    _teacher_file(tmp_path / "teacher.jsonl")
    raw = _config(tmp_path, tiny_causal_dir).model_dump(mode="json")
    raw["sweep"].update(
        fractions=[1.0],
        methods=["standard", {"method": "step_by_step", "label_source": "gold", "gold_filter": True}],
        students=[{"keep_layers": [0]}, {"name": "whole"}, str(tiny_seq2seq_dir)],
    )
    run(config_from_dict(raw))
    run_dir = tmp_path / "runs" / "t"
    t5 = tiny_seq2seq_dir.name
    assert {p.parent.name for p in run_dir.glob("*/metrics.json")} == {
        f"{s}-{m}-f1-s0"
        for s in (f"{tiny_causal_dir.name}-L1", "whole", t5)
        for m in ("standard", "step_by_step-gold-filtered")
    }
    metrics = {p.parent.name: json.loads(p.read_text()) for p in run_dir.glob("*/metrics.json")}
    params = {
        n.rsplit("-standard", 1)[0]: m["student"]["params"] for n, m in metrics.items() if "-standard-" in n
    }
    assert params[f"{tiny_causal_dir.name}-L1"] < params["whole"]
    assert metrics[f"{t5}-standard-f1-s0"]["student"]["kind"] == "seq2seq"
    gold = metrics["whole-step_by_step-gold-filtered-f1-s0"]
    assert (gold["label_source"], gold["train"]["label_examples"]) == ("gold", 16)
    # the teacher errs on every third example (ids 0, 3, ..., 15): 6 of 16 rationales are filtered out
    assert gold["train"]["rationale_examples"] == 10
    md = (run_dir / "report" / "report.md").read_text()
    assert "## Student size" in md and "](figures/sizes.png)" in md
    assert (run_dir / "report" / "figures" / "sizes.png").read_bytes()[:4] == b"\x89PNG"
    sizes = md.split("## Student size")[1].split("\n## ")[0]
    assert sizes.count("| step_by_step (gold labels, filtered rationales) |") == 3
    assert "**With gold labels** (whole)" in md


def test_sweep_students_are_validated(tmp_path):
    raw = _config(tmp_path, tmp_path / "m").model_dump(mode="json")
    raw["sweep"]["students"] = [{"keep_layer": [0]}]
    with pytest.raises(ConfigError, match=r"sweep.students: .*students\[0\].keep_layer: Extra inputs"):
        config_from_dict(raw)
    raw["sweep"]["students"] = None
    raw["sweep"]["methods"] = ["step_by_step", {"method": "step_by_step"}]
    with pytest.raises(ConfigError, match="the same method and label settings twice"):
        config_from_dict(raw)


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "best" / "model.safetensors"))


def _parallel_config(tmp_path: Path, model_dir: Path, name: str, workers: int | str):
    raw = _config(tmp_path, model_dir, max_steps=4, eval_every=2).model_dump(mode="json")
    raw["name"] = name
    raw["data"] = {s: str(tmp_path / "data" / f"{s}.jsonl") for s in SIZES}
    raw["sweep"].update(fractions=[1.0], workers=workers)
    return config_from_dict(raw)


@pytest.mark.slow
def test_concurrent_trainings_give_the_weights_and_metrics_of_trainings_in_turn(
    tmp_path, tiny_causal_dir, monkeypatch, capfd
):
    from transformers.utils import logging as hf_logging

    _teacher_file(tmp_path / "teacher.jsonl")
    monkeypatch.setattr(stepdistill.run_parallel, "cpu_cores", lambda: 2)  # one thread per child
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)  # restored after the test
    monkeypatch.setattr(hf_logging, "_tqdm_active", True)  # as on a fresh start, restored after the test
    said = {}
    for name, workers in (("seq", 1), ("par", "auto")):  # the command as typed, its output captured
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps(_parallel_config(tmp_path, tiny_causal_dir, name, workers).model_dump()))
        assert main(["run", str(path)]) == 0
        captured = capfd.readouterr()
        said[name] = captured.out + captured.err
    out = said["par"]
    # the costlier training (two passes a step) starts first, so the last one to finish is short
    assert out.index("train step_by_step-f1-s0: started") < out.index("train standard-f1-s0: started")
    for text in said.values():
        # library bars are off (our training bars are off too: the output is not a terminal), and the
        # trainings, which read the run's annotations, do not say they found none
        assert not re.search(r"Loading weights|Writing model shards|it/s\]", text), text
        assert "no annotations in" not in text
    names = ("standard-f1-s0", "step_by_step-f1-s0")
    for name in names:
        seq, par = tmp_path / "runs" / "seq" / name, tmp_path / "runs" / "par" / name
        assert f"[run] train {name}: started, 1 thread, output in {par / 'train.log'}" in out
        assert re.search(rf"\[run\] train {name}: finished in \d+ s, 4 steps \(at its step budget\); ", out)
        a, b = json.loads((seq / "metrics.json").read_text()), json.loads((par / "metrics.json").read_text())
        assert a["best_step"] == b["best_step"]
        assert a["splits"] == b["splits"]  # accuracies, losses and predictions' outcomes
        assert [r["loss"] for r in _log(seq) if "loss" in r] == [r["loss"] for r in _log(par) if "loss" in r]
        wa, wb = _weights(seq), _weights(par)
        assert wa.keys() == wb.keys()
        for key in wa:
            torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0)
        # a child's output went to its log, not to the run's
        assert "[train] " in (par / "train.log").read_text() and f"[train] {name}:" not in out
    stages = json.loads((tmp_path / "runs" / "par" / "stages.json").read_text())
    assert {f"train:{n}" for n in names} <= set(stages)
    run(_parallel_config(tmp_path, tiny_causal_dir, "par", "auto"))  # a re-run skips both
    out = capfd.readouterr().out
    assert all(f"train {n}: done before, skipped" in out for n in names)


def _log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_failed_concurrent_training_is_named_with_its_exit_code(tmp_path, tiny_causal_dir, monkeypatch):
    from stepdistill import runlock
    from stepdistill.run_parallel import TrainingFailed

    _teacher_file(tmp_path / "teacher.jsonl")
    monkeypatch.setattr(stepdistill.run_parallel, "cpu_cores", lambda: 2)
    cfg = _parallel_config(tmp_path, tiny_causal_dir, "par", 2)
    busy = cfg.run_dir / "standard-f1-s0"
    with runlock.hold(busy, "train"), pytest.raises(TrainingFailed) as err:  # another process has it
        run(cfg)
    assert err.value.exit_code == 2  # the child's own exit code: a busy run folder
    assert str(err.value).startswith("training standard-f1-s0 failed (exit 2); the end of ")
    assert f"{busy} is in use by `stepdistill train`" in str(err.value)
    # the other training ran to its end and is recorded, so a re-run skips it
    assert (cfg.run_dir / "step_by_step-f1-s0" / "metrics.json").exists()
    stages = json.loads((cfg.run_dir / "stages.json").read_text())
    assert "train:step_by_step-f1-s0" in stages and "train:standard-f1-s0" not in stages


@pytest.mark.slow
def test_ctrl_c_stops_concurrent_trainings_with_checkpoints_and_exit_75(tmp_path, tiny_causal_dir):
    _teacher_file(tmp_path / "teacher.jsonl")
    cfg = _parallel_config(tmp_path, tiny_causal_dir, "par", 2)
    raw = cfg.model_dump(mode="json")
    raw["train"].update(max_steps=5000, eval_every=5000, log_every=1, patience=None)
    (tmp_path / "par.yaml").write_text(json.dumps(raw))  # JSON is YAML
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stepdistill.cli", "run", str(tmp_path / "par.yaml")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    logs = [cfg.run_dir / n / "train_log.jsonl" for n in ("standard-f1-s0", "step_by_step-f1-s0")]
    deadline = time.monotonic() + 300
    while not all(p.exists() for p in logs) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the command (the children have their own group)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err
    assert "SIGINT: stopped trainings standard-f1-s0, step_by_step-f1-s0" in err
    lines = plan(config_from_dict(raw))
    for name in ("standard-f1-s0", "step_by_step-f1-s0"):
        state = next(line for line in lines if line.startswith(f"train {name}: "))
        assert re.fullmatch(rf"train {name}: resumes at step \d+", state), state


def test_workers_share_the_cores(monkeypatch):
    from stepdistill.run_parallel import plan_workers

    monkeypatch.setattr(stepdistill.run_parallel, "_has_accelerator", lambda: False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert plan_workers("auto", pending=4, cores=2) == (2, 1)  # the demo on 2 cores
    assert plan_workers("auto", pending=2, cores=8) == (2, 4)  # never more workers than trainings
    assert plan_workers("auto", pending=1, cores=2) == (1, 2)  # one training: in this process
    assert plan_workers(3, pending=4, cores=8) == (3, 2)
    monkeypatch.setattr(stepdistill.run_parallel, "_has_accelerator", lambda: True)
    assert plan_workers("auto", pending=4, cores=16) == (1, 16)  # trainings would share one GPU
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert plan_workers(4, pending=4, cores=16)[0] == 1  # under torchrun every training uses all ranks

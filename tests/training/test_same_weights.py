"""A short run trains to the weights and losses recorded before the training path was rewritten
(issue 21): deleting the parallel loss paths, splitting `fit` and moving checks into the config must
not move a single number. Recorded on the code of main at f3bd5cd; tolerance 1e-6 (relative)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from stepdistill.config import config_from_dict
from stepdistill.data.io import iter_jsonl, write_jsonl
from stepdistill.schema import Annotation
from stepdistill.train import train

LABELS = ["yes", "no", "maybe"]
TASK = {"name": "generic", "input_template": "Q: {text}", "label_field": "label", "labels": LABELS}
TIMING = {"tokens_per_s", "examples_per_s", "elapsed_s", "lr", "epoch", "step"}

CASES = {
    # step_by_step with a linear alpha schedule, accumulation and a token budget per pass
    "causal_sbs": dict(
        student="causal",
        train={
            "alpha": 0.3,
            "alpha_schedule": "linear",
            "alpha_end": 0.9,
            "grad_accum": 2,
            "batch_size": 2,
            "max_tokens_per_pass": 40,
        },
    ),  # fmt: skip
    "seq2seq_distill": dict(student="seq2seq", train={"method": "distill", "warmup_ratio": 0.3}),
    "causal_kd": dict(
        student="causal",
        train={"alpha": 0.4},
        kd={"weight": 0.5, "temperature": 2.0, "tasks": ["label", "rationale"]},
    ),
}

# Recorded before the rewrite: per log row the loss terms, and sum(|w|) / sum(w * index) of the
# last checkpoint's weights (the index makes a permutation of values count).
RECORDED: dict[str, dict] = {
    "causal_sbs": {
        "losses": [
            {
                "loss": 10.627329349517822,
                "label_loss": 10.717020511627197,
                "rationale_loss": 10.576907021658762,
            },
            {"loss": 9.972428321838379, "label_loss": 10.05300521850586, "rationale_loss": 9.877839006696428},
            {"loss": 9.704255104064941, "label_loss": 9.715044021606445, "rationale_loss": 9.683309282575335},
            {"loss": 9.344086170196533, "label_loss": 9.343188285827637, "rationale_loss": 9.369548143659319},
        ],
        "weights": [43434.50635159596, 8851709.650716638],
    },
    "seq2seq_distill": {
        "losses": [
            {"loss": 26.77007293701172, "label_loss": 26.770071665445965, "rationale_loss": 0.0},
            {"loss": 19.93865203857422, "label_loss": 19.93865203857422, "rationale_loss": 0.0},
            {"loss": 16.420400619506836, "label_loss": 16.420399983723957, "rationale_loss": 0.0},
            {"loss": 12.343404769897461, "label_loss": 12.343404769897461, "rationale_loss": 0.0},
        ],
        "weights": [1260344.0083068325, 485172.47120191995],
    },
    "causal_kd": {
        "losses": [
            {
                "loss": 5.404046297073364,
                "label_loss": 10.724832534790039,
                "rationale_loss": 10.567342276525014,
                "kd_loss": 0.17775501253628972,
                "kd_ce_loss": 10.630338379831024,
                "kd_label_loss": 0.1766302486260732,
                "kd_rationale_loss": 0.17850485514310072,
            },
            {
                "loss": 5.072040557861328,
                "label_loss": 10.092777887980143,
                "rationale_loss": 9.904935483579282,
                "kd_loss": 0.16400953398810492,
                "kd_ce_loss": 9.980072445339626,
                "kd_label_loss": 0.1625140110651652,
                "kd_rationale_loss": 0.16500654927006475,
            },
            {
                "loss": 4.926042556762695,
                "label_loss": 9.7392946879069,
                "rationale_loss": 9.661361694335938,
                "kd_loss": 0.1595500046556646,
                "kd_ce_loss": 9.692534891764323,
                "kd_label_loss": 0.1523388922214508,
                "kd_rationale_loss": 0.1643574129451405,
            },
            {
                "loss": 4.741786479949951,
                "label_loss": 9.376891771952312,
                "rationale_loss": 9.293895348956688,
                "kd_loss": 0.15647868670598425,
                "kd_ce_loss": 9.327093918154938,
                "kd_label_loss": 0.14788347979386646,
                "kd_rationale_loss": 0.1622088246473961,
            },
        ],
        "weights": [44477.271074753895, 7946183.385762435],
    },
}


def _annotations(n: int = 6) -> list[Annotation]:
    return [
        Annotation(
            id=f"q{i}",
            fields={"text": f"is {i} a lucky number?"},
            gold=LABELS[i % 3],
            teacher_label=LABELS[i % 3],
            teacher_rationale=f"Number {i} is checked{' twice' * (i % 4)}.",
            teacher_raw=f"Number {i} is checked. So the answer is {LABELS[i % 3]}.",
        )
        for i in range(n)
    ]


def _fingerprint(path) -> tuple[float, float]:
    weights = load_file(path)
    flat = torch.cat([weights[k].double().flatten() for k in sorted(weights)])
    index = torch.arange(flat.numel(), dtype=torch.float64) % 997
    return float(flat.abs().sum()), float((flat * index).sum())


def _run(tmp_path, case: dict, student_dir, teacher_dir) -> dict:
    data = tmp_path / "train.jsonl"
    write_jsonl(data, [a.to_dict() for a in _annotations()])
    raw = {
        "name": "same",
        "out_dir": str(tmp_path / "runs"),
        "task": TASK,
        "data": {"train": str(data), "valid": str(data), "test": str(data)},
        "student": {"model": str(student_dir), "config_overrides": {}},
        "train": {
            "batch_size": 3,
            "lr": 1e-2,
            "max_steps": 6,
            "eval_every": 3,
            "log_every": 2,
            "seed": 3,
            **case["train"],
        },  # fmt: skip
        "eval": {"batch_size": 8, "max_new_tokens": 4, "splits": ["test"]},
    }
    if "kd" in case:
        raw["kd"] = {"teacher_model": str(teacher_dir), **case["kd"]}
    run = train(config_from_dict(raw))
    rows = [r for _, r in iter_jsonl(run / "train_log.jsonl") if "loss" in r]
    return {
        "losses": [{k: v for k, v in r.items() if k not in TIMING} for r in rows],
        "weights": _fingerprint(run / "checkpoints" / "step-6" / "model.safetensors"),
    }


@pytest.fixture(scope="module")
def kd_teacher_dir(tmp_path_factory, tiny_causal_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    out = tmp_path_factory.mktemp("same-teacher")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_causal_dir).save_pretrained(out)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_short_run_trains_to_the_recorded_weights(name, tmp_path, tiny_causal_dir, tiny_seq2seq_dir,
                                                  kd_teacher_dir):  # fmt: skip
    case = CASES[name]
    student = tiny_causal_dir if case["student"] == "causal" else tiny_seq2seq_dir
    got = _run(tmp_path, case, student, kd_teacher_dir)
    want = RECORDED[name]
    assert got["weights"] == pytest.approx(want["weights"], rel=1e-6)
    assert len(got["losses"]) == len(want["losses"])
    for g, w in zip(got["losses"], want["losses"]):
        assert g.keys() == w.keys()
        # the weights hold to 1e-6; a logged KD term sums a log-softmax over the vocabulary, whose
        # float32 rounding moved by 3e-6 (relative) between transformers/torch releases
        assert g == pytest.approx(w, rel=1e-5)

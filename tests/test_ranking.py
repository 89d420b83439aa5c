"""eval.label_decoding: rank — each candidate scored as its training target, batched scores equal to
one-at-a-time hand computation, the most likely candidate predicted, and clear refusals."""

from __future__ import annotations

import pytest
import torch

from stepdistill.errors import ConfigError
from stepdistill.evaluate_config import EvalConfig
from stepdistill.schema import Annotation
from stepdistill.tasks import get_task
from stepdistill.tasks.config import TaskConfig
from stepdistill.training.batching import encode_source
from stepdistill.training.config import StudentConfig, TrainConfig
from stepdistill.training.formatting import eval_source

CHOICES = ["bank", "library", "garden center", "math problem", "river"]
ROWS = [
    Annotation(id=f"q{i}", fields={"question": q, "choices": CHOICES}, gold=g, teacher_label=g)
    for i, (q, g) in enumerate(
        [
            ("Where do you keep money?", "bank"),
            ("Where are books lent?", "library"),
            ("What is 2 + 3?", "math problem"),
        ]
    )
]


def _student(path):
    from stepdistill.training.models import load_student

    torch.manual_seed(0)
    return load_student(StudentConfig(model=str(path)), seed=0)


def _by_hand(student, source_ids: list[int], target_ids: list[int]) -> float:
    """log p(target | source), one unpadded sequence at a time."""
    model = student.model.eval()
    with torch.no_grad():
        if student.kind == "causal":
            ids = torch.tensor([source_ids + target_ids])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            return sum(float(logp[len(source_ids) - 1 + j, t]) for j, t in enumerate(target_ids))
        out = model(input_ids=torch.tensor([source_ids]), labels=torch.tensor([target_ids]))
        logp = torch.log_softmax(out.logits[0].float(), -1)
        return sum(float(logp[j, t]) for j, t in enumerate(target_ids))


@pytest.mark.parametrize("model", ["tiny_causal_dir", "tiny_seq2seq_dir"])
@pytest.mark.parametrize("method", ["step_by_step", "answer_first"])
def test_batched_scores_equal_one_at_a_time_scores(model, method, request):
    from stepdistill.ranking import candidate_ids, rank_labels

    student = _student(request.getfixturevalue(model))
    task = get_task(TaskConfig(name="cqa"))
    cfg = TrainConfig(method=method, max_target_length=16)
    sources = [eval_source(task, a, cfg) for a in ROWS]
    cands = [task.candidates(a.fields) for a in ROWS]
    best, table = rank_labels(student, task, sources, cands, cfg, EvalConfig(batch_size=4))
    for i, src in enumerate(sources):
        src_ids = encode_source(student.tokenizer, src, cfg, student.kind)
        expect = [
            _by_hand(student, src_ids, candidate_ids(student.tokenizer, task, c, method, cfg))
            for c in CHOICES
        ]
        assert table[i] == pytest.approx(expect, abs=2e-4)
        assert best[i] == CHOICES[max(range(5), key=lambda j: expect[j])]
    _, again = rank_labels(student, task, sources, cands, cfg, EvalConfig(batch_size=1))
    for row, row_again in zip(table, again):  # batching and padding do not change a score
        assert row_again == pytest.approx(row, abs=2e-4)


def test_candidate_target_is_the_trained_target(smol_tokenizer):
    from stepdistill.ranking import candidate_ids

    task, cfg = get_task(TaskConfig(name="cqa")), TrainConfig(max_target_length=16)
    tok = smol_tokenizer
    label_first = candidate_ids(tok, task, "math problem", "step_by_step", cfg)
    assert label_first == tok("math problem", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    answer_first = candidate_ids(tok, task, "math problem", "answer_first", cfg)
    assert answer_first == tok("math problem\n", add_special_tokens=False)["input_ids"]  # a rationale follows


def test_a_memorised_label_is_ranked_first_and_scored(tiny_causal_dir, memorise):
    from stepdistill.evaluate import predict_labels

    student = _student(tiny_causal_dir)
    task = get_task(TaskConfig(name="cqa"))
    cfg = TrainConfig(method="standard", max_target_length=16)
    memorise(student, eval_source(task, ROWS[2], cfg), "math problem")
    rows = predict_labels(student, task, ROWS, cfg, EvalConfig(label_decoding="rank"))
    assert rows[2]["pred"] == "math problem" and rows[2]["correct"] is True
    assert all(r["pred"] in CHOICES for r in rows)  # a ranked prediction is always a candidate


def test_rank_refuses_open_answers_and_rationale_first_methods(tiny_causal_dir):
    from stepdistill.evaluate import predict_labels

    student = _student(tiny_causal_dir)
    svamp = get_task(TaskConfig(name="svamp"))
    row = Annotation(id="s", fields={"input": "Tom has 2 apples. How many?"}, gold="2")
    with pytest.raises(ConfigError, match="rank needs a closed label set, and task 'svamp' has none"):
        predict_labels(
            student, svamp, [row], TrainConfig(method="standard"), EvalConfig(label_decoding="rank")
        )
    cqa = get_task(TaskConfig(name="cqa"))
    with pytest.raises(ConfigError, match="single_task writes its rationale first"):
        predict_labels(
            student, cqa, ROWS, TrainConfig(method="single_task"), EvalConfig(label_decoding="rank")
        )


def test_nli_and_generic_labels_are_candidates():
    nli = get_task(TaskConfig(name="esnli"))
    assert set(nli.candidates({"premise": "p", "hypothesis": "h"})) == {
        "entailment",
        "neutral",
        "contradiction",
    }
    generic = get_task(
        TaskConfig(name="generic", input_template="{text}", label_field="y", labels=["positive", "negative"])
    )
    assert generic.candidates({"text": "fine"}) == ("positive", "negative")
    assert get_task(TaskConfig(name="svamp")).candidates({}) is None


def test_training_selects_and_scores_by_rank(tmp_path, tiny_causal_dir):
    """A short CQA training with label_decoding: rank: validation (checkpoint choice) and the test
    predictions are ranked choices, and metrics.json says how labels were decoded."""
    import json

    from stepdistill.config import config_from_dict
    from stepdistill.data.io import write_jsonl
    from stepdistill.train import train

    rows = [dict(a.__dict__) for a in ROWS]
    write_jsonl(tmp_path / "train.jsonl", [{**r, "id": f"{r['id']}-{k}"} for k in range(3) for r in rows])
    write_jsonl(tmp_path / "valid.jsonl", rows)
    cfg = config_from_dict(
        {
            "name": "r",
            "out_dir": str(tmp_path / "runs"),
            "task": {"name": "cqa"},
            "data": {"train": str(tmp_path / "train.jsonl"), "valid": str(tmp_path / "valid.jsonl"),
                     "test": str(tmp_path / "valid.jsonl")},
            "student": {"model": str(tiny_causal_dir)},
            "train": {"method": "distill", "batch_size": 3, "lr": 1e-2, "max_steps": 4, "eval_every": 2},
            "eval": {"batch_size": 8, "label_decoding": "rank"},
        }
    )  # fmt: skip
    run = train(cfg)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["label_decoding"] == "rank"
    preds = [json.loads(line) for line in (run / "predictions" / "test.jsonl").read_text().splitlines()]
    assert [p["pred"] in CHOICES for p in preds] == [True] * 3
    assert metrics["splits"]["test"]["correct"] == sum(p["correct"] for p in preds)
    evals = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [len(r["valid_correct"]) for r in evals if "valid_correct" in r] == [3, 3]

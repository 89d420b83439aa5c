"""A run folder is self-contained: its config.yaml reloads to exactly the config that ran, and
`evaluate RUN` / `predict RUN` work from it for every shipped config and for a spec-file task."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from stepdistill.cli import main
from stepdistill.config import config_from_dict, load_config, resolved, save_config
from stepdistill.data.io import iter_jsonl, write_jsonl

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))

# Two examples per task family, in the annotated form every reader accepts: (fields, gold).
ROWS = {
    "cqa": [
        (
            {"question": "Where is milk kept cold?", "choices": ["fridge", "oven", "car", "bed", "sky"]},
            "fridge",
        ),
        ({"question": "What do you sit on?", "choices": ["lamp", "chair", "cup", "tree", "rain"]}, "chair"),
    ],
    "svamp": [
        ({"input": "Tom had 3 pens. He got 2 more. How many pens has he?"}, "( 3.0 + 2.0 )"),
        ({"input": "Ann had 9 cakes. She ate 4. How many are left?"}, "( 9.0 - 4.0 )"),
    ],
    "esnli": [
        ({"premise": "A dog runs.", "hypothesis": "An animal moves."}, "entailment"),
        ({"premise": "A man sleeps.", "hypothesis": "A man runs."}, "contradiction"),
    ],
    "arith": [
        ({"question": "Tom has 3 pens and buys 2. How many pens has he?"}, "3 + 2"),
        ({"question": "Ann has 9 cakes and eats 4. How many are left?"}, "9 - 4"),
    ],
    "generic": [
        ({"text": "A wonderful film."}, "positive"),
        ({"text": "Dull and far too long."}, "negative"),
    ],
}
ROWS["anli"] = ROWS["esnli"]

SPEC = """\
input_template: "Review: {text}\\nIs this review positive or negative?"
label_field: sentiment
labels: [positive, negative]
metric: normalized
"""


def _data(tmp_path: Path, family: str) -> str:
    path = tmp_path / f"{family}.jsonl"
    rows = [{"id": f"r{i}", "fields": f, "gold": g} for i, (f, g) in enumerate(ROWS[family])]
    write_jsonl(path, rows)
    return str(path)


def _last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def _round_trip(raw: dict, tmp_path: Path, tiny_causal_dir: Path, capsys) -> Path:
    """save -> load -> evaluate -> predict, with the tiny student as the run's best/."""
    cfg = config_from_dict(raw)
    run = cfg.run_dir
    save_config(cfg, run / "config.yaml")
    shutil.copytree(tiny_causal_dir, run / "best")
    again = load_config(run / "config.yaml")
    assert again == resolved(cfg)
    save_config(again, tmp_path / "again.yaml")  # a fixed point: saving the reloaded config changes nothing
    assert (tmp_path / "again.yaml").read_text() == (run / "config.yaml").read_text()

    assert main(["evaluate", str(run)]) == 0
    line = _last_line(capsys)
    assert line.startswith("evaluate: valid ") and f"-> {run / 'evaluation'}" in line
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert {s: metrics["splits"][s]["n"] for s in ("valid", "test")} == {"valid": 2, "test": 2}

    inputs = raw["data"]["test"]
    assert main(["predict", str(run), "--input", inputs, "--rationale"]) == 0
    out = run / f"predictions-{Path(inputs).stem}.jsonl"
    assert _last_line(capsys).startswith("predict: 2 inputs, ") and _last_line_ends(out)
    assert [r["id"] for _, r in iter_jsonl(out)] == ["r0", "r1"]
    return run


def _last_line_ends(path: Path) -> bool:
    return path.exists()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_round_trips_through_a_run_folder(path, tmp_path, tiny_causal_dir, capsys):
    raw = yaml.safe_load(path.read_text())
    family = raw["task"]["name"]
    data = _data(tmp_path, family)
    raw.update(name="rt", out_dir=str(tmp_path / "runs"))
    raw["data"] = {"train": data, "valid": data, "test": data}
    raw["student"] = {"model": str(tiny_causal_dir)}
    raw["eval"] = {"max_new_tokens": 2, "batch_size": 2, "splits": ["valid", "test"]}
    raw["train"] = {**raw.get("train", {}), "max_target_length": 4}
    _round_trip(raw, tmp_path, tiny_causal_dir, capsys)


def test_spec_file_task_is_folded_into_the_run_folder(tmp_path, tiny_causal_dir, capsys):
    spec = tmp_path / "sentiment.yaml"
    spec.write_text(SPEC)
    data = tmp_path / "reviews.jsonl"
    write_jsonl(
        data,
        [
            {"review_id": f"r{i}", "text": f["text"], "sentiment": g}
            for i, (f, g) in enumerate(ROWS["generic"])
        ],
    )
    raw = {
        "name": "sentiment",
        "out_dir": str(tmp_path / "runs"),
        "task": {"name": "generic", "spec": str(spec), "id_field": "review_id"},
        "data": {"train": str(data), "valid": str(data), "test": str(data)},
        "student": {"model": str(tiny_causal_dir)},
        "eval": {"max_new_tokens": 2},
    }
    cfg = config_from_dict(raw)
    save_config(cfg, cfg.run_dir / "config.yaml")
    task = yaml.safe_load((cfg.run_dir / "config.yaml").read_text())["task"]
    assert task == {
        "name": "generic",
        "title": "sentiment",
        "spec": None,
        "input_template": "Review: {text}\nIs this review positive or negative?",
        "label_field": "sentiment",
        "id_field": "review_id",
        "labels": ["positive", "negative"],
        "answer_pattern": None,
        "answer_phrase": None,
        "exemplar_marker": None,
        "metric": "normalized",
    }
    shutil.rmtree(cfg.run_dir)
    spec.unlink()  # the run folder no longer needs the spec file
    with pytest.raises(Exception, match="does not exist"):
        resolved(cfg)
    spec.write_text(SPEC)
    run = _round_trip(raw, tmp_path, tiny_causal_dir, capsys)
    spec.unlink()
    assert main(["evaluate", str(run), "--split", "test"]) == 0
    assert _last_line(capsys).startswith("evaluate: test ")

"""The quality grid: cells, --only slicing, resume (finished cells skipped), aggregation, configs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from quality import (
    CONFIG_DIR,
    FLOOR,
    Cell,
    CellsFailed,
    aggregate,
    grid,
    load_results,
    load_spec,
    matches,
    mean_se,
    parse_only,
    run_grid,
)

from stepdistill.errors import ConfigError

SPEC = {
    "name": "t",
    "tasks": ["svamp"],
    "seeds": [0, 1],
    "methods": {"standard": {"method": "standard"}, "sbs": {"method": "step_by_step"}},
    "data_efficiency": {"methods": ["sbs"], "fractions": [0.25, 0.5]},
    "train": {"max_steps": 2},
}


def test_grid_has_every_method_seed_fraction_and_one_floor():
    keys = [c.key for c in grid(SPEC)]
    assert keys == [
        "task=svamp,method=floor,seed=0,fraction=1",
        "task=svamp,method=standard,seed=0,fraction=1",
        "task=svamp,method=standard,seed=1,fraction=1",
        "task=svamp,method=sbs,seed=0,fraction=1",
        "task=svamp,method=sbs,seed=1,fraction=1",
        "task=svamp,method=sbs,seed=0,fraction=0.5",
        "task=svamp,method=sbs,seed=1,fraction=0.5",
        "task=svamp,method=sbs,seed=0,fraction=0.25",
        "task=svamp,method=sbs,seed=1,fraction=0.25",
    ]


def test_only_filter_selects_cells():
    only = parse_only("method=sbs,seed=0,fraction=0.250")
    picked = [c.key for c in grid(SPEC) if matches(c, only)]
    assert picked == ["task=svamp,method=sbs,seed=0,fraction=0.25"]
    assert len([c for c in grid(SPEC) if matches(c, parse_only("seed=1"))]) == 4
    assert parse_only(None) == {}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_only("lr=1")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_only("method")


def test_run_grid_writes_each_cell_and_resume_skips_finished(tmp_path):
    path = tmp_path / "quality-t.json"
    cells = [c for c in grid(SPEC) if c.method != FLOOR][:3]
    calls = []

    def runner(cell: Cell):
        calls.append(cell.key)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return {"test_accuracy": 0.5 + 0.1 * cell.seed}

    with pytest.raises(CellsFailed) as failed:
        run_grid(cells, path, runner)
    assert failed.value.failures == {cells[1].key: "RuntimeError: out of memory"}
    assert calls == [c.key for c in cells]  # the failure did not stop the cells after it
    saved = load_results(path)["cells"]
    assert list(saved) == [cells[0].key, cells[2].key]
    assert saved[cells[0].key]["test_accuracy"] == 0.5 and saved[cells[0].key]["method"] == "standard"

    calls.clear()
    ran = run_grid(cells, path, lambda c: (calls.append(c.key), {"test_accuracy": 0.25})[1])
    assert ran == calls == [cells[1].key]  # only the failed cell is retried
    assert run_grid(cells, path, lambda c: pytest.fail("nothing left to run")) == []
    assert len(json.loads(path.read_text())["cells"]) == 3


def test_a_failed_cell_releases_its_claim_and_an_interrupt_stops_the_grid(tmp_path):
    path, claims = tmp_path / "quality-t.json", tmp_path / "claims"
    cells = [c for c in grid(SPEC) if c.method != FLOOR][:2]

    def broken(cell: Cell):
        raise ValueError("bad config")

    with pytest.raises(CellsFailed):
        run_grid(cells, path, broken, claims)
    assert list(claims.iterdir()) == []  # another worker may retry them at once

    calls = []

    def interrupted(cell: Cell):
        calls.append(cell.key)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_grid(cells, path, interrupted, claims)
    assert calls == [cells[0].key] and list(claims.iterdir()) == []


def test_mean_and_standard_error_by_hand():
    m, se = mean_se([60.0, 62.0, 67.0])
    assert m == pytest.approx(63.0)
    # sample sd = sqrt(((-3)^2 + (-1)^2 + 4^2) / 2) = sqrt(13); se = sqrt(13) / sqrt(3)
    assert se == pytest.approx(math.sqrt(13) / math.sqrt(3))
    assert mean_se([70.0]) == (70.0, None)


def test_aggregate_groups_seeds_per_method_and_fraction():
    results = {"cells": {}}
    for seed, acc in [(0, 0.6), (1, 0.7)]:
        c = Cell("svamp", "sbs", seed, 1.0)
        results["cells"][c.key] = {"task": "svamp", "method": "sbs", "seed": seed, "fraction": 1.0,
                                   "test_accuracy": acc, "cell_wall_s": 10.0}  # fmt: skip
    c = Cell("svamp", "sbs", 0, 0.5)
    results["cells"][c.key] = {"task": "svamp", "method": "sbs", "seed": 0, "fraction": 0.5,
                               "test_accuracy": 0.4, "cell_wall_s": 5.0}  # fmt: skip
    agg = aggregate(results)
    assert agg[("svamp", "sbs", 1.0)]["mean"] == pytest.approx(65.0)
    assert agg[("svamp", "sbs", 1.0)]["se"] == pytest.approx(5.0)
    assert agg[("svamp", "sbs", 1.0)]["n"] == 2 and agg[("svamp", "sbs", 1.0)]["wall_s"] == 20.0
    assert agg[("svamp", "sbs", 0.5)] == {"mean": pytest.approx(40.0), "se": None, "n": 1, "wall_s": 5.0}


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_shipped_grid_configs_load_and_build_valid_cell_configs(name, tmp_path):
    from quality import cell_config

    spec = load_spec(name)
    cells = grid(spec)
    assert {c.method for c in cells} == {
        FLOOR,
        "standard",
        "distill",
        "sbs_gold",
        "sbs_teacher",
        "single_task",
    }
    steps = {spec["train"]["max_steps"]}
    for cell in cells:
        if cell.method == FLOOR:
            continue
        cfg = cell_config(spec, cell, tmp_path, smoke=False)
        assert cfg.train.max_steps in steps  # the same budget for every method
        assert cfg.train.seed == cell.seed and cfg.data.train_fraction == cell.fraction
        assert cfg.data.valid is None and cfg.data.valid_fraction == 0.1 and cfg.data.split_seed == 0
    sbs_gold = cell_config(spec, Cell("svamp", "sbs_gold", 0, 1.0), tmp_path, smoke=False)
    assert (sbs_gold.train.method, sbs_gold.train.label_source) == ("step_by_step", "gold")
    assert CONFIG_DIR.joinpath(f"{name}.yaml").exists()


def test_bad_config_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [svamp]\nseeds: [0]\ntrain: {}\nmethods: {x: {lr: 1}}\n")
    with pytest.raises(ConfigError, match="methods.x must be a mapping with a 'method' key"):
        load_spec(str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec("no-such-config")


def test_smoke_training_cell_end_to_end_on_svamp(shared_data, tiny_causal_dir, tmp_path):
    """A real cell: import the PaLM SVAMP files, train the tiny decoder 4 steps, score valid/test."""
    from quality import prepare_data, run_training_cell

    data_dir = prepare_data("svamp", tmp_path / "data")
    spec = dict(
        SPEC, out_dir=str(tmp_path / "runs"), student={"model": str(tiny_causal_dir), "kind": "causal"}
    )
    spec["train"] = {"max_steps": 4, "batch_size": 2}
    spec["eval"] = {"batch_size": 8, "max_new_tokens": 4}
    path = tmp_path / "quality-t.json"
    cell = Cell("svamp", "sbs", 0, 0.5)
    run_grid([cell], path, lambda c: run_training_cell(spec, c, data_dir, smoke=True))
    saved = load_results(path)["cells"][cell.key]
    assert saved["steps"] == 4 and 0.0 <= saved["test_accuracy"] <= 1.0
    assert saved["cell_wall_s"] > 0 and (tmp_path / "runs").exists()
    run_dir = Path(saved["run_dir"])  # the finished cell keeps its results, not its weights
    assert (run_dir / "metrics.json").exists() and (run_dir / "predictions").is_dir()
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "best").exists()
    # per-example outcomes are kept for paired comparisons (smoke: the first 8 test rows)
    assert len(saved["test_correct"]) == saved["n_test"] == 8
    assert sum(saved["test_correct"].values()) == round(8 * saved["test_accuracy"])


def test_demo_study_grid_names_its_annotations_and_settings(tmp_path):
    """bench/configs/study-demo.yaml: every method on all 100 problems, the gold-label pair on 50 and
    25; each method trains on the annotation it names, the demo's own validation split, task arith."""
    from quality import cell_config, data_dir_for

    spec = load_spec("study-demo")
    cells = grid(spec)
    assert len(cells) == 3 * (len(spec["methods"]) + 2 * 3)
    assert {c.method for c in cells if c.fraction == 0.25} == {
        "standard",
        "sbs_gold_one",
        "sbs_gold_agree_k8",
    }
    cell = Cell("demo", "sbs_gold_agree_k8", 1, 0.25)
    assert data_dir_for(spec, cell).name == "study-demo-k8"
    cfg = cell_config(spec, cell, tmp_path, smoke=False)
    assert (cfg.task.name, cfg.train.method, cfg.train.label_source) == ("arith", "step_by_step", "gold")
    assert (cfg.train.rationales, cfg.train.seed, cfg.data.train_fraction) == ("agreeing", 1, 0.25)
    assert cfg.data.valid == str(tmp_path / "valid.jsonl")
    assert cell_config(spec, Cell("demo", "distill_k1", 0, 1.0), tmp_path, False).train.rationales == "one"
    for a, b in spec["pairs"]:
        assert a in spec["methods"] and b in spec["methods"]


def test_a_method_naming_an_unknown_annotation_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "settings: [{task: demo}]\nseeds: [0]\ntrain: {}\ndemo: {annotations: {k1: 1}}\n"
        "methods: {x: {method: standard, annotation: k9}}\n"
    )
    with pytest.raises(ConfigError, match="methods.x.annotation: 'k9' is not in demo.annotations"):
        load_spec(str(bad))

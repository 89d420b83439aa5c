"""Every shipped config file loads and validates; config errors name the field and what is allowed."""

from pathlib import Path

import pytest

from stepdistill.config import apply_overrides, load_config
from stepdistill.errors import ConfigError
from stepdistill.run_config import method_spec
from stepdistill.tasks import get_task

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_configs_are_shipped():
    names = {p.stem for p in CONFIGS}
    assert {"demo", "cqa", "svamp", "esnli", "anli", "generic-api-teacher", "which-method"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.name
    task = get_task(cfg.task)
    assert task.name == cfg.task.name or cfg.task.name == "generic"
    for method in cfg.sweep.methods:
        assert method_spec(method).method in {
            "standard",
            "distill",
            "step_by_step",
            "single_task",
            "answer_first",
            "rationale_input",
        }


def test_which_method_config_compares_every_method_to_convergence(tmp_path):
    from stepdistill.run import training_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "which-method.yaml")
    assert (cfg.train.eval_schedule, cfg.train.patience) == ("geometric", 3)
    assert not cfg.annotate.gold_filter and cfg.sweep.seeds == [0, 1, 2]
    assert cfg.eval.label_decoding == "rank"  # every method here writes its label first
    files = {"train": "a/train.jsonl", "valid": "a/valid.jsonl", "test": "a/test.jsonl"}
    subs = [training_config(cfg, m, 1.0, 0, files) for m in cfg.sweep.methods]
    assert [(s.train.method, s.train.label_source, s.train.alpha_schedule) for s in subs] == [
        ("standard", "teacher", "constant"),  # standard trains on gold whatever label_source says
        ("step_by_step", "gold", "constant"),
        ("distill", "teacher", "constant"),
        ("step_by_step", "teacher", "constant"),
        ("step_by_step", "teacher", "linear"),
        ("answer_first", "teacher", "constant"),
    ]
    assert len({s.run_dir for s in subs}) == 6


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


BASE = "task: {name: svamp}\ndata: {train: t.jsonl}\n"


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.learning_rate: unknown key"):
        load_config(_write(tmp_path, BASE + "train: {learning_rate: 0.1}\n"))


def test_bad_choice_names_allowed_values(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, BASE + "train: {method: magic}\n"))
    msg = str(err.value)
    assert "train.method" in msg and "step_by_step" in msg and "standard" in msg


def test_out_of_range_value(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.alpha"):
        load_config(_write(tmp_path, BASE + "train: {alpha: 1.5}\n"))


def test_overrides_are_typed_and_validated(tmp_path):
    path = _write(tmp_path, BASE)
    cfg = load_config(path, ["--train.lr", "1e-4", "--train.group_by_length=false", "--name", "x"])
    assert cfg.train.lr == 1e-4 and cfg.train.group_by_length is False and cfg.name == "x"
    with pytest.raises(ConfigError, match=r"train\.batch_size"):
        load_config(path, ["--train.batch_size", "many"])
    with pytest.raises(ConfigError, match="no value"):
        apply_overrides({}, ["--train.lr"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "task: [unclosed\n"))

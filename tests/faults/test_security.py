"""Security checks on a full `stepdistill run` (teacher over HTTP on 127.0.0.1, tiny student):
the API key never lands on disk or in the output, hostile model output is inert in the HTML report,
hostile example ids never become paths, weights load only from safetensors, and remote code is off
unless a config turns it on."""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from scripted_server import ScriptedServer, ok_body

from stepdistill.config import config_from_dict
from stepdistill.data.io import write_jsonl
from stepdistill.errors import ConfigError
from stepdistill.kd.config import KDConfig
from stepdistill.run import run
from stepdistill.teachers.config import TeacherConfig
from stepdistill.training.config import StudentConfig
from stepdistill.training.models import load_student

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOSTILE = (
    '<script>document.title="pwned"</script><a href="javascript:alert(1)">x</a><img src=x onerror=alert(2)>'
)
IDS = ["../../escaped", "/tmp/abs-evil", "a/b\\c", "<img src=x onerror=alert(3)>", "nul\x00byte", "ok"]


def _tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_full_run_keeps_the_key_secret_and_the_report_inert(tmp_path, tiny_causal_dir, monkeypatch, capfd):
    key = "sk-sentinel-" + secrets.token_hex(16)
    monkeypatch.setenv("STEPDISTILL_TEST_KEY", key)
    server = ScriptedServer(lambda body: ok_body(f"{HOSTILE} so add. The answer is ( 2 + 2 ).", body))
    try:
        rows = [
            {"id": i, "question": f"What is {n} + 2? {HOSTILE}", "answer": "2 + 2"}
            for n, i in enumerate(IDS * 2)
        ]
        for n, row in enumerate(rows):
            row["id"] = f"{row['id']}-{n}"
        write_jsonl(tmp_path / "data" / "train.jsonl", rows[:9])
        write_jsonl(tmp_path / "data" / "test.jsonl", rows[9:])
        cfg = config_from_dict(
            {
                "name": "sec",
                "out_dir": str(tmp_path / "runs"),
                "task": {"name": "arith"},
                "data": {"train": str(tmp_path / "data" / "train.jsonl"), "test": str(tmp_path / "data" / "test.jsonl"), "valid_fraction": 0.25},
                "teacher": {"backend": "openai_http", "model": "m", "base_url": server.url, "api_key_env": "STEPDISTILL_TEST_KEY", "max_retries": 0},
                "annotate": {"progress": False},
                "student": {"model": str(tiny_causal_dir)},
                "train": {"batch_size": 4, "lr": 1e-2, "max_steps": 2, "eval_every": 2},
                "eval": {"batch_size": 8, "max_new_tokens": 4},
                "sweep": {"methods": ["step_by_step"], "teacher_timing_examples": 2},
                "report": {"sample_size": 3},
            }
        )  # fmt: skip
        before = _tree(tmp_path)
        report = run(cfg)
    finally:
        server.close()
    out, err = capfd.readouterr()
    # the key was really used (so the checks below could have failed) ...
    assert {r["headers"].get("Authorization") for r in server.requests} == {f"Bearer {key}"}
    # ... and is nowhere: not in any file of the run folder (logs, config, cache, TensorBoard, report)
    run_dir = tmp_path / "runs" / "sec"
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(files) > 20 and any(p.name == "cache.sqlite" for p in files)
    assert [p for p in files if key.encode() in p.read_bytes()] == []
    assert key not in out and key not in err
    # every new path is inside the run folder, and no file is named after an example id
    new = _tree(tmp_path) - before - set(run_dir.parents)
    assert all(p.is_relative_to(run_dir) for p in new), sorted(
        str(p) for p in new if not p.is_relative_to(run_dir)
    )
    assert not any(s in p.name for p in new for s in ("escaped", "abs-evil", "onerror"))
    # hostile teacher output and ids are shown as text, never as markup
    html = report.read_text()
    assert "&lt;script&gt;" in html and "javascript:alert(1)" in html  # shown ...
    assert "<script" not in html and 'href="javascript' not in html and "<img src=x" not in html  # ... inert
    if CHROMIUM:
        dom = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'p'}",
             "--virtual-time-budget=3000", "--dump-dom", report.as_uri()],
            capture_output=True, text=True, timeout=120,
        ).stdout  # fmt: skip
        assert "pwned" not in re.findall(r"<title>(.*?)</title>", dom)[0]
        assert "<script" not in dom and '<img src="x"' not in dom


def test_weights_load_only_from_safetensors(tmp_path, tiny_causal_dir):
    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_causal_dir, pickled)
    weights = load_file(str(pickled / "model.safetensors"))
    (pickled / "model.safetensors").unlink()
    torch.save(weights, pickled / "pytorch_model.bin")  # same weights, pickled
    with pytest.raises(OSError, match="safetensors"):
        load_student(StudentConfig(model=str(pickled)))
    assert load_student(StudentConfig(model=str(tiny_causal_dir))).n_params > 0


def test_remote_code_is_off_by_default_and_never_runs(tmp_path, tiny_causal_dir):
    assert StudentConfig().trust_remote_code is False
    assert TeacherConfig(backend="hf_local").trust_remote_code is False
    assert KDConfig.model_fields["trust_remote_code"].default is False
    custom = tmp_path / "custom"
    shutil.copytree(tiny_causal_dir, custom)
    marker = tmp_path / "code-ran"
    (custom / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import LlamaConfig\nclass EvilConfig(LlamaConfig):\n    model_type = 'evil'\n"
    )
    cfg_json = custom / "config.json"
    # a model type transformers does not know: only the folder's own code could build it
    text = cfg_json.read_text().replace('"model_type": "llama"', '"model_type": "evil"')
    cfg_json.write_text(
        text.replace('"model_type"', '"auto_map": {"AutoConfig": "evil.EvilConfig"}, "model_type"', 1)
    )
    with pytest.raises(ConfigError, match="trust_remote_code"):
        load_student(StudentConfig(model=str(custom)))
    assert not marker.exists()

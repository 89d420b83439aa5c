"""bench/gpu_ddp_fsdp.py without a GPU: config, data and launch commands (the launches need CUDA)."""

from __future__ import annotations

import json

import gpu_ddp_fsdp
import yaml


def test_dry_run_writes_config_and_commands(tmp_path, shared_data):
    assert gpu_ddp_fsdp.main([str(tmp_path), "--dry-run", "--steps", "7", "--data", str(shared_data)]) == 0
    report = json.loads((tmp_path / "gpu_ddp_fsdp.json").read_text())
    assert set(report["commands"]) == {"ddp", "fsdp"} and report["steps"] == 7
    ddp, fsdp = report["commands"]["ddp"], report["commands"]["fsdp"]
    assert ddp[ddp.index("--config_file") + 1].endswith("configs/accelerate/ddp-1node.yaml")
    assert fsdp[fsdp.index("--config_file") + 1].endswith("configs/accelerate/fsdp-1node.yaml")
    assert ddp[ddp.index("--num_processes") + 1] == "1" and ddp[-1] == "--name=ddp"
    cfg = yaml.safe_load((tmp_path / "gpu.yaml").read_text())
    assert cfg["student"]["model"] == "embedded:smollm2" and cfg["train"]["max_steps"] == 7
    assert (tmp_path / "data" / "train.jsonl").stat().st_size > 0 and (tmp_path / "child.py").exists()
    compile((tmp_path / "child.py").read_text(), "child.py", "exec")


def test_final_loss_is_the_last_logged_training_loss(tmp_path):
    rows = [{"step": 5, "loss": 2.0}, {"step": 5, "valid_accuracy": 0.1}, {"step": 10, "loss": 1.5}]
    (tmp_path / "train_log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert gpu_ddp_fsdp.last_loss(tmp_path) == 1.5

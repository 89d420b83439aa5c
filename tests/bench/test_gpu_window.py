"""bench/gpu.py's time budget: stages that cannot fit are skipped, each with its reason, and the
summary file says so (the end-to-end run is `bench/gpu.sh smoke OUT_DIR`)."""

from __future__ import annotations

import json

import pytest


def test_stages_are_skipped_with_a_reason_when_time_is_short(tmp_path, monkeypatch):
    import gpu
    import train_speed

    if not train_speed.SHARED_DATA.exists():
        pytest.skip(f"reference data not found at {train_speed.SHARED_DATA} (STEPDISTILL_SHARED_DATA)")
    monkeypatch.setenv("STEPDISTILL_SHARED_DATA", str(train_speed.SHARED_DATA))
    assert gpu.main([str(tmp_path), "--budget-s", "60", "--smoke"]) == 0
    summary = json.loads((tmp_path / "gpu_summary.json").read_text())
    assert summary["speed"]["status"] == "skipped" and "needed" in summary["speed"]["reason"]
    slices = summary["quality"]["slices"]
    assert [s["slice"] for s in slices] == ["svamp", "cqa_seed0"]
    assert all(s["status"] == "skipped" and "left" in s["reason"] for s in slices)
    assert not (tmp_path / "train_speed-cpu.json").exists()

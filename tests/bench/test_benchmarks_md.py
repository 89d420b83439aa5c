"""BENCHMARKS.md: each script replaces only its own marked section."""

from __future__ import annotations

import pytest
from benchmarks_md import machine_info, replace_section, write_section
from train_speed import PeakMemory, summarise


def test_section_appended_then_replaced_leaving_others_intact(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    write_section("a", "first A", path)
    write_section("b", "only B", path)
    write_section("a", "second A\nline 2", path)
    assert path.read_text() == (
        "# Benchmarks\n\n"
        "<!-- bench:a -->\nsecond A\nline 2\n<!-- /bench:a -->\n\n"
        "<!-- bench:b -->\nonly B\n<!-- /bench:b -->\n"
    )


def test_foreign_text_and_similar_names_are_untouched():
    text = "# Benchmarks\n\nintro by hand\n\n<!-- bench:train_speed_gpu -->\nX\n<!-- /bench:train_speed_gpu -->\n"
    out = replace_section(text, "train_speed", "new")
    assert out.startswith(text.rstrip("\n"))
    assert out.endswith("<!-- bench:train_speed -->\nnew\n<!-- /bench:train_speed -->\n")
    assert replace_section(out, "train_speed", "newer").count("<!-- bench:train_speed -->") == 1


def test_unterminated_section_is_an_error():
    with pytest.raises(ValueError, match="no <!-- /bench:a -->"):
        replace_section("<!-- bench:a -->\nx\n", "a", "y")


def test_machine_info_names_cores_and_torch():
    import os

    import torch

    info = machine_info("cpu")
    assert info["cores"] == str(os.cpu_count())
    assert (info["torch"], info["threads"]) == (torch.__version__, str(torch.get_num_threads()))
    assert info["cpu"] and "gpu" not in info


def test_cpu_peak_memory_sees_an_allocation_inside_the_window():
    mem = PeakMemory("cpu")
    mem.start()
    buf = bytearray(64 * 2**20)
    for i in range(0, len(buf), 4096):  # touch every page so it becomes resident
        buf[i] = 1
    del buf
    peak, over = mem.stop()
    assert over >= 60 * 2**20 and peak > over


def test_summarise_ratios_from_measures():
    from train_speed import Measure

    ms = [
        Measure("reference", "m", 4, 40, 4000, 20.0, 1000, 300, 10, 10.0, 2.0),
        Measure("ours", "m", 4, 40, 3000, 5.0, 1100, 330, 10, 4.0, 2.0),
        Measure("standard", "m", 4, 40, 1000, 4.0, 1000, 300, 10, 4.0, 1.0),
        Measure("ours_budget", "m", 4, 40, 3000, 6.0, 1050, 315, 10, 5.0, 3.5),
        Measure("standard_budget", "m", 4, 40, 1000, 4.0, 1000, 300, 10, 4.0, 1.0),
    ]
    (row,) = summarise(ms, "cpu", n_epoch=720)
    ours = row["designs"]["ours"]
    assert ours["speedup"] == pytest.approx(3.0)  # 600 tokens/s against 200
    assert ours["speedup_cpu_time"] == pytest.approx(1.875)  # 750 tokens per CPU-second against 400
    assert ours["examples_per_s"] == pytest.approx(8.0)
    assert ours["epoch_s_extrapolated"] == pytest.approx(90.0)
    assert ours["tokens_per_s"] == pytest.approx(600.0)
    assert row["memory_ratio_total"] == pytest.approx(1.1)
    assert row["memory_ratio_over_start"] == pytest.approx(1.1)
    assert row["memory_ratio_over_start_budget"] == pytest.approx(1.05)
    assert row["designs"]["reference"]["speedup"] == pytest.approx(1.0)


def test_summarise_mfu_from_counted_flops():
    from train_speed import Measure

    ms = [
        Measure("reference", "m", 4, 40, 4000, 20.0, 1000, 300, 10, 10.0, 2.0, flops=2 * 10**15),
        Measure("ours", "m", 4, 40, 4000, 5.0, 1100, 330, 10, 4.0, 2.0, flops=2 * 10**15),
        Measure("standard", "m", 4, 40, 1000, 4.0, 1000, 300, 10, 4.0, 1.0),
    ]
    (row,) = summarise(ms, "cuda", n_epoch=720, peak_tflops=1000.0, ceiling_tflops=800.0)
    ours, ref = row["designs"]["ours"], row["designs"]["reference"]
    assert ours["achieved_tflops"] == pytest.approx(400.0)  # 2e15 FLOPs in 5 s
    assert ours["mfu"] == pytest.approx(0.4)
    assert ours["mfu_of_ceiling"] == pytest.approx(0.5)
    assert ref["mfu"] == pytest.approx(0.1)  # same rows, same FLOPs, 4x the time
    assert "achieved_tflops" not in row["designs"]["standard"]  # no FLOPs counted, no MFU claimed


def test_markdown_names_the_ceiling_and_mfu():
    from types import SimpleNamespace

    from train_speed import Measure, markdown

    ms = [
        Measure("reference", "m", 4, 40, 4000, 20.0, 1000, 300, 10, 10.0, 2.0, flops=2 * 10**15),
        Measure("ours", "m", 4, 40, 4000, 5.0, 1100, 330, 10, 4.0, 2.0, flops=2 * 10**15),
        Measure("standard", "m", 4, 40, 1000, 4.0, 1000, 300, 10, 4.0, 1.0, flops=10**15),
    ]
    rows = summarise(ms, "cuda", n_epoch=720, peak_tflops=1000.0, ceiling_tflops=800.0)
    info = {"gpu": "NVIDIA H200", "cpu": "x", "cores": 16, "threads": 16, "torch": "2.11",
            "peak_tflops": 1000.0, "matmul_ceiling_tflops": 800.0, "matmul_ceiling_shape": "8192x8192x8192 bf16"}  # fmt: skip
    args = SimpleNamespace(device="cuda", batch_size=64, warmup=2, steps=20, bf16=True, max_tokens_per_pass=0)
    text = markdown(rows, info, args, "python bench/train_speed.py", 720, "max_memory_allocated")
    ours_line = next(line for line in text.splitlines() if "ours, step_by_step |" in line)
    assert ours_line.endswith("| 400 | 50.0% | 40.0% |")
    assert "measured in this run" in text and "1000.0 TFLOP/s" in text

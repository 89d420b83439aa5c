"""BENCHMARKS.md: each script replaces only its own marked section."""

from __future__ import annotations

import pytest
from benchmarks_md import machine_info, replace_section, write_section
from train_speed import PeakMemory


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

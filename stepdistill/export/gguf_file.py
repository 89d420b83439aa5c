"""Write a trained decoder student as a GGUF file: llama.cpp's own format, weights in float16.

    write_gguf(model, tokenizer, Path("student-f16.gguf"), name="demo-standard", extra={...})

This is the inverse of what stepdistill/embedded.py reads (tensor names in gguf_llama.py): the same `llama` architecture keys, the
same tensor names (`token_embd`, `blk.N.attn_q`, ...) as the shipped SmolLM2 GGUF, and the tokenizer
the student trained with (its vocabulary, merges, special tokens, chat template), so that llama.cpp,
its server and Ollama read the file with nothing else beside it. Matrices are stored in float16 and
the norms in float32, as llama.cpp's own converter does; quantized files are made from this one by
llama.cpp's quantizer (quantize.py).

Supported: Llama-architecture students (LlamaForCausalLM: SmolLM2, Llama) with a byte-level BPE
tokenizer. Anything else is refused by `check_exportable` before a weight is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from stepdistill.errors import ConfigError
from stepdistill.gguf_llama import LAYER_TENSORS, permute_rope

ARCH = "llama"
SUPPORTED = "Llama-architecture decoders (LlamaForCausalLM: SmolLM2, Llama)"
EXTRA_KEY = "stepdistill.student"  # JSON: what `predict` needs to prompt the file (task, method, ...)

# llama.cpp picks its pre-tokenizer (the regex that cuts text before BPE) by name. The name is
# chosen from the student's own tokenizer.json, so llama.cpp cuts text the way training did:
PRE_TOKENIZERS = {
    # GPT-2's regex alone (what transformers writes for a tokenizer read from a GGUF file)
    (("ByteLevel", True),): "gpt-2",
    # single digits first, then GPT-2's regex (SmolLM2's original tokenizer.json)
    (("Digits", True), ("ByteLevel", True)): "smollm",
}
TOKEN_NORMAL, TOKEN_UNUSED, TOKEN_CONTROL, TOKEN_USER_DEFINED = 1, 5, 3, 4  # gguf TokenType values


def check_exportable(model_dir: Path) -> dict[str, Any]:
    """The student's config.json when export supports it; else ConfigError naming what is supported."""
    path = model_dir / "config.json"
    if not path.is_file():
        raise ConfigError(f"{model_dir}: no trained student there (config.json is missing)")
    config = json.loads(path.read_text())
    arch = (config.get("architectures") or [config.get("model_type", "?")])[0]
    if arch != "LlamaForCausalLM":
        raise ConfigError(
            f"{model_dir}: cannot export a {arch} student to GGUF; export supports {SUPPORTED} "
            "(the run's best/ folder loads with transformers as it is)"
        )
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise ConfigError(
                f"{model_dir}: config.json sets {key}; export supports Llama students without biases"
            )
    scaling = config.get("rope_scaling") or {}
    if (scaling.get("rope_type") or scaling.get("type") or "default") != "default":
        raise ConfigError(f"{model_dir}: rope scaling '{scaling}' is not supported by the GGUF export")
    return config


def pre_tokenizer_name(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's pre-tokenizer name for a byte-level BPE tokenizer.json; ConfigError otherwise."""
    model = tokenizer_json.get("model") or {}
    pre = tokenizer_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    key = tuple((p.get("type"), bool(p.get("use_regex", p.get("individual_digits", False)))) for p in parts)
    name = PRE_TOKENIZERS.get(key)
    if model.get("type") != "BPE" or tokenizer_json.get("normalizer") or name is None:
        raise ConfigError(
            f"the student's tokenizer (model {model.get('type')}, pre-tokenizer {key}) is not one the "
            f"GGUF export can describe to llama.cpp; supported: byte-level BPE as in SmolLM2"
        )
    return name


def gguf_tensors(state: dict[str, np.ndarray], config: dict[str, Any]) -> list[tuple[str, np.ndarray]]:
    """(GGUF name, array) of every weight, in llama.cpp's order; matrices float16, vectors float32.
    `state`: transformers names -> float32 arrays."""
    n_head, n_kv = (
        config["num_attention_heads"],
        config.get("num_key_value_heads") or config["num_attention_heads"],
    )

    def cast(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float16 if a.ndim == 2 else np.float32)

    out = [("token_embd.weight", cast(state["model.embed_tokens.weight"]))]
    for i in range(config["num_hidden_layers"]):
        for hf, name in LAYER_TENSORS.items():
            w = state[f"model.layers.{i}.{hf}.weight"]
            if name == "attn_q":
                w = permute_rope(w, n_head)
            elif name == "attn_k":
                w = permute_rope(w, n_kv)
            out.append((f"blk.{i}.{name}.weight", cast(w)))
    out.append(("output_norm.weight", cast(state["model.norm.weight"])))
    if not config.get("tie_word_embeddings", False):  # tied: llama.cpp reads token_embd for the output
        out.append(("output.weight", cast(state["lm_head.weight"])))
    return out


def vocab(tokenizer_json: dict[str, Any], n_vocab: int) -> tuple[list[str], list[int], list[str]]:
    """(tokens by id, their GGUF token types, merges "a b") from a BPE tokenizer.json, padded to the
    model's `n_vocab` rows with unused "[PAD<id>]" tokens as llama.cpp's converter does."""
    tokens: dict[int, str] = {i: t for t, i in tokenizer_json["model"]["vocab"].items()}
    types = dict.fromkeys(tokens, TOKEN_NORMAL)
    for added in tokenizer_json.get("added_tokens", []):
        tokens[added["id"]] = added["content"]
        types[added["id"]] = TOKEN_CONTROL if added.get("special") else TOKEN_USER_DEFINED
    if max(tokens) >= n_vocab:
        raise ConfigError(f"the tokenizer has token id {max(tokens)} but the model only {n_vocab} embeddings")
    names = [tokens.get(i, f"[PAD{i}]") for i in range(n_vocab)]
    kinds = [types.get(i, TOKEN_UNUSED) for i in range(n_vocab)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer_json["model"].get("merges", [])]
    return names, kinds, merges


def write_gguf(model_dir: Path, tokenizer, out: Path, name: str, extra: dict[str, Any] | None = None) -> Path:
    """Write the student saved in `model_dir` (config.json, safetensors, tokenizer.json) to `out` as
    a float16 GGUF. `tokenizer` is the loaded transformers tokenizer (special tokens, BOS behaviour,
    chat template); `extra` is stored as JSON under stepdistill.student. The caller writes `out` under
    a temporary name and renames it (export/deploy.py)."""
    import gguf
    from safetensors.torch import load_file  # torch reads bfloat16 files too; numpy cannot

    config = check_exportable(model_dir)
    tok_json = json.loads((model_dir / "tokenizer.json").read_text())
    pre = pre_tokenizer_name(tok_json)
    state: dict[str, np.ndarray] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        state.update({k: v.float().numpy() for k, v in load_file(f).items()})
    tensors = gguf_tensors(state, config)
    n_vocab = tensors[0][1].shape[0]
    n_head = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}

    w = gguf.GGUFWriter(str(out), ARCH)
    w.add_name(name)
    w.add_type("model")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_vocab_size(n_vocab)
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_block_count(config["num_hidden_layers"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(config.get("num_key_value_heads") or n_head)
    w.add_rope_dimension_count(head_dim)
    if head_dim != config["hidden_size"] // n_head:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_rope_freq_base(float(config.get("rope_theta") or rope.get("rope_theta") or 10000.0))
    w.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))

    names, kinds, merges = vocab(tok_json, n_vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(names)
    w.add_token_types(kinds)
    w.add_token_merges(merges)
    for token, add in (
        (tokenizer.bos_token_id, w.add_bos_token_id),
        (tokenizer.eos_token_id, w.add_eos_token_id),
        (tokenizer.unk_token_id, w.add_unk_token_id),
        (tokenizer.pad_token_id, w.add_pad_token_id),
    ):
        if token is not None:
            add(int(token))
    # Whether BOS/EOS wrap a prompt is read off the tokenizer itself, as the student was prompted.
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    w.add_add_bos_token(tokenizer.bos_token_id is not None and probe[0] == tokenizer.bos_token_id)
    w.add_add_eos_token(tokenizer.eos_token_id is not None and probe[-1] == tokenizer.eos_token_id)
    if isinstance(getattr(tokenizer, "chat_template", None), str):
        w.add_chat_template(tokenizer.chat_template)
    if extra:
        w.add_string(EXTRA_KEY, json.dumps(extra, sort_keys=True))

    for tensor_name, array in tensors:
        w.add_tensor(tensor_name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out

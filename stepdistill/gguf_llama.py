"""The llama architecture in GGUF files: tensor names and the rotary row order, both directions.

llama.cpp names a Llama decoder's tensors `token_embd`, `blk.N.attn_q`, ... and stores the rows of
the q and k projections in its own rotary layout; transformers names them `model.embed_tokens`,
`model.layers.N.self_attn.q_proj`, ... in its layout. The embedded model's converter
(embedded.py) reads a GGUF file into transformers' names; the GGUF export (export/gguf_file.py)
writes the other way. Both use this one table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Per-layer tensors: transformers name -> GGUF name.
LAYER_TENSORS = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
# Tensors outside the layers: transformers name -> GGUF name (lm_head only when not tied).
OUTER_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def permute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder the rows of a q or k projection from transformers' rotary layout (the two halves of
    each head rotate together) to llama.cpp's (neighbouring rows rotate together).
    w: [n_head * head_dim, hidden]."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of `permute_rope`: llama.cpp's rotary row order back to transformers'."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_llama_weights(path: Path, n_head: int, n_kv_head: int) -> dict[str, np.ndarray]:
    """Every weight of a llama-architecture GGUF file as float32 arrays under transformers' names
    (quantized tensors dequantized by the gguf package; q and k rows in transformers' order)."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    to_hf = {g: hf for hf, g in OUTER_TENSORS.items()}
    state: dict[str, np.ndarray] = {}
    for tensor in GGUFReader(str(path)).tensors:
        shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists dimensions innermost first
        values = dequantize(tensor.data, tensor.tensor_type).reshape(shape).astype(np.float32)
        name = tensor.name
        if name in to_hf:
            state[to_hf[name]] = values
            continue
        _, layer, short, _ = name.split(".")  # blk.N.attn_q.weight
        hf = next(h for h, g in LAYER_TENSORS.items() if g == short)
        if short == "attn_q":
            values = unpermute_rope(values, n_head)
        elif short == "attn_k":
            values = unpermute_rope(values, n_kv_head)
        state[f"model.layers.{layer}.{hf}.weight"] = values
    return state

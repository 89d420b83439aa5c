"""Training FLOPs actually needed by a step, and model FLOPs utilisation (MFU) against a device peak.

    from stepdistill.training.flops import FlopModel, device_peak_tflops
    fm = FlopModel.from_model(model, kind="causal")
    flops = fm.train_flops([(src_len, tgt_len), ...])     # one (source, target) pair per row
    mfu = flops / seconds / (device_peak_tflops(torch.cuda.get_device_name()) * 1e12)

What is counted (forward; training = 3x forward, the backward pass computing gradients of both the
activations and the weights):
  * every non-embedding matmul (nn.Linear / GPT-2 Conv1D) once per token of the stack it belongs to:
    2 * in * out FLOPs. Seq2seq (T5, BART): encoder matmuls per source token, decoder matmuls per
    target token, and the decoder's cross-attention key/value projections per SOURCE token (they
    project the encoder states, once per decoder layer);
  * the output projection (lm_head) only at target tokens: the trainer never computes logits at
    prompt tokens, so they are not useful work;
  * attention scores and the weighted sum of values: 4 * width FLOPs per (query, key) pair that the
    mask allows (causal: t + 1 keys for query t; encoder: every pair; cross-attention: every target
    x source pair), where width = heads * head_dim. Masked-out pairs are not counted.
  * token embeddings (a lookup), norms, activations and softmax are not counted (the usual
    convention; they are a few percent at these sizes).

Padding is never counted: it is work a design chooses to waste, so two designs that train on the
same rows are credited with the same FLOPs and their MFU ratio is their speed ratio. The common
"6 x parameters x tokens" estimate overstates an encoder-decoder about 2x (each token passes through
one stack, not both) and counts the lm_head at every prompt token.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch

# Dense (no sparsity) bf16 tensor-core peak per card in TFLOP/s, from the vendors' datasheets, keyed
# by the exact name torch.cuda.get_device_name() returns. A substring match would rate an H100 PCIe
# card (756) at the SXM part's 989: unknown names get no table peak, only the measured ceiling.
DENSE_BF16_TFLOPS: dict[str, float] = {
    "NVIDIA H100 80GB HBM3": 989.4,  # H100 SXM5
    "NVIDIA H100 PCIe": 756.5,
    "NVIDIA H100 NVL": 835.5,
    "NVIDIA H200": 989.4,  # H200 SXM: the H100's arithmetic, more memory
    "NVIDIA H200 NVL": 835.5,
    "NVIDIA GH200 480GB": 989.4,
    "NVIDIA A100-SXM4-80GB": 312.0,
    "NVIDIA A100-SXM4-40GB": 312.0,
    "NVIDIA A100 80GB PCIe": 312.0,
    "NVIDIA A100-PCIE-40GB": 312.0,
    "NVIDIA L40S": 362.05,
    "NVIDIA L4": 121.0,
    "NVIDIA A10": 125.0,
}


def device_peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of a card named exactly `name`, or None when the table does not know it."""
    return DENSE_BF16_TFLOPS.get(name.strip())


def measure_matmul_tflops(
    device: str | torch.device = "cpu", n: int = 4096, dtype: torch.dtype = torch.bfloat16, repeats: int = 10
) -> float:
    """Achieved TFLOP/s of an [n, n] @ [n, n] product on `device` (mean of `repeats` after 3 warm-ups):
    the practical ceiling the training step is compared with, beside the datasheet peak."""
    device = torch.device(device)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(3):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    seconds = time.perf_counter() - start
    return 2 * n**3 * repeats / seconds / 1e12


def _matmul_size(module: torch.nn.Module) -> int:
    """in * out of a dense projection module, 0 for anything else."""
    if isinstance(module, torch.nn.Linear):
        return module.in_features * module.out_features
    if type(module).__name__ == "Conv1D":  # GPT-2 style: weight [in, out]
        return module.weight.numel()
    return 0


def _is_cross_kv(name: str) -> bool:
    """Cross-attention key/value projections of a seq2seq decoder (T5, BART/Marian/Pegasus names)."""
    return name.endswith(
        ("EncDecAttention.k", "EncDecAttention.v", "encoder_attn.k_proj", "encoder_attn.v_proj")
    )


@dataclass(frozen=True)
class FlopModel:
    """Per-token forward FLOP coefficients of one student (see the module docstring)."""

    kind: str  # "causal" or "seq2seq"
    decoder_matmul: int  # sum of in*out over the matmuls each target-side (causal: every) token runs
    encoder_matmul: int  # seq2seq: matmuls each source token runs (encoder + cross-attention k/v)
    output_matmul: int  # in*out of the output projection, run at target tokens only
    decoder_layers: int
    encoder_layers: int
    attention_width: int  # heads * head_dim of one attention layer

    @classmethod
    def from_model(cls, model: torch.nn.Module, kind: str) -> FlopModel:
        """Read the coefficients off a transformers model (LoRA adapters count as the matmuls they are)."""
        base = getattr(model, "get_base_model", lambda: model)()
        out = base.get_output_embeddings()
        dec = enc = 0
        for name, module in base.named_modules():
            size = _matmul_size(module)
            if not size or module is out:
                continue
            if kind == "seq2seq" and (name.startswith(("encoder.", "model.encoder.")) or _is_cross_kv(name)):
                enc += size
            else:
                dec += size
        cfg = base.config.get_text_config()
        if kind == "seq2seq":
            heads = getattr(cfg, "num_heads", None) or cfg.decoder_attention_heads
            head_dim = getattr(cfg, "d_kv", None) or cfg.d_model // heads
            n_dec = getattr(cfg, "num_decoder_layers", None) or cfg.decoder_layers
            n_enc = getattr(cfg, "num_layers", None) or cfg.encoder_layers
        else:
            heads = cfg.num_attention_heads
            head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
            n_dec, n_enc = cfg.num_hidden_layers, 0
        return cls(kind, dec, enc, _matmul_size(out), n_dec, n_enc, heads * head_dim)

    def forward_flops(self, rows: Iterable[tuple[int, int]]) -> int:
        """Forward FLOPs of rows given as (source tokens, target tokens); causal rows read both as one
        sequence and predict the target tokens, seq2seq rows encode the source and decode the target."""
        total = 0
        w = self.attention_width
        for source, target in rows:
            if self.kind == "causal":
                length = source + target
                total += 2 * self.decoder_matmul * length
                total += self.decoder_layers * 2 * w * length * (length + 1)  # causal pairs: L(L+1)/2
            else:
                total += 2 * self.encoder_matmul * source + 2 * self.decoder_matmul * target
                total += self.encoder_layers * 4 * w * source * source
                total += self.decoder_layers * (2 * w * target * (target + 1) + 4 * w * target * source)
            total += 2 * self.output_matmul * target
        return total

    def train_flops(self, rows: Iterable[tuple[int, int]]) -> int:
        """Forward + backward: 3x the forward FLOPs."""
        return 3 * self.forward_flops(rows)

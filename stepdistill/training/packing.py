"""Padding-free passes for causal (decoder-only) students: a pass's rows packed into token buffers.

With train.packing, each forward pass of a causal student is collated as a few buffers of at most
`capacity` tokens (train.pack_tokens, or the pass's longest row if that is longer) instead of rows
right-padded to the longest: rows are placed first-fit by decreasing length, and each buffer is as
wide as its fullest one. `position_ids` restart at 0 at every row, and the model is called with
`attention_mask=None` and `use_cache=False` (with a cache transformers skips the detection), so
transformers builds the block-diagonal causal mask from the restarts
(masking_utils.find_packed_sequence_indices: SDPA/eager/flex on CPU and GPU); with a flash-attention
implementation the precomputed `cu_seq_lens_q/k` and `max_length_q/k` go to flash-attention's varlen
kernel (modeling_flash_attention_utils: "padding free ... cu_seqlen and max_length are provided").
Each row therefore sees exactly the tokens and positions it sees when padded.

Which buffer position predicts which target token (and its row, task and position within the row)
is computed here, at collation, so the step gathers hidden states with one `index_select` and never
calls `nonzero` on the device. Targets are listed row by row, as in the padded layout.

Seq2seq (T5) students stay padded: their encoder and decoder would need two packings and
cross-attention masks per row, and length grouping already keeps their padding small. Passes of a
run with a kd: section stay padded too (the teacher and the top-k alignment read the padded layout).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch


def tensor_fields(obj, fn: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
    """`fn` of every tensor field of the dataclass `obj`, by field name (for dataclasses.replace)."""
    return {
        f.name: fn(v) for f in dataclasses.fields(obj) if isinstance(v := getattr(obj, f.name), torch.Tensor)
    }


@dataclass
class Packed:
    """The tensors a packed pass adds to its Batch, all computed at collation."""

    position_ids: torch.Tensor  # [buffers, width]; 0 at the first token of every row
    target_index: torch.Tensor  # [n_targets] flat index (buffer * width + position) of the predicting state
    target_ids: torch.Tensor  # [n_targets] token ids to predict
    target_rows: torch.Tensor  # [n_targets] row of the pass (the order of task_ids and keys)
    target_positions: torch.Tensor  # [n_targets] index of the token within its row
    target_tasks: torch.Tensor  # [n_targets] 0 label token, 1 rationale token
    cu_seq_lens: torch.Tensor  # [segments + 1] int32 over the flattened buffers (flash varlen)
    max_length: int  # longest segment

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Packed:
        """A copy with `fn` applied to every tensor (max_length shared)."""
        return dataclasses.replace(self, **tensor_fields(self, fn))

    def to(self, device, non_blocking: bool = False) -> Packed:
        return self.map_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    def attention_kwargs(self, model) -> dict:
        """What the decoder needs besides input_ids and position_ids for this attention kernel."""
        if not str(getattr(model.config, "_attn_implementation", "")).startswith("flash"):
            return {}
        return {
            "cu_seq_lens_q": self.cu_seq_lens,
            "cu_seq_lens_k": self.cu_seq_lens,
            "max_length_q": self.max_length,
            "max_length_k": self.max_length,
        }


def place_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Row indices per buffer: first fit by decreasing length into buffers of `capacity` tokens (at
    least the longest row). Deterministic: ties keep the row order."""
    capacity = max([capacity, *lengths])
    buffers: list[list[int]] = []
    fill: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for b, used in enumerate(fill):
            if used + lengths[i] <= capacity:
                buffers[b].append(i)
                fill[b] += lengths[i]
                break
        else:
            buffers.append([i])
            fill.append(lengths[i])
    return buffers


def pack(
    sources: list[list[int]], targets: list[list[int]], task_ids: list[int], pad_id: int, capacity: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Packed]:
    """(input_ids, attention_mask, labels [buffers, width], Packed) of rows `source + target`;
    labels carry each target token at its buffer position (-100 elsewhere)."""
    lengths = [len(s) + len(t) for s, t in zip(sources, targets)]
    buffers = place_rows(lengths, capacity)
    width = max(sum(lengths[i] for i in b) for b in buffers)
    ids = torch.full((len(buffers), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(buffers), width), dtype=torch.long)
    labels = torch.full((len(buffers), width), -100, dtype=torch.long)
    positions = torch.zeros((len(buffers), width), dtype=torch.long)
    start: dict[int, int] = {}  # row -> flat index of its first token
    segments: list[int] = []
    for b, rows in enumerate(buffers):
        offset = 0
        for i in rows:
            n, s = lengths[i], len(sources[i])
            ids[b, offset : offset + n] = torch.tensor(sources[i] + targets[i])
            mask[b, offset : offset + n] = 1
            labels[b, offset + s : offset + n] = torch.tensor(targets[i])
            positions[b, offset : offset + n] = torch.arange(n)
            start[i] = b * width + offset
            segments.append(n)
            offset += n
        if offset < width:  # the buffer's tail: a segment of its own that predicts nothing
            positions[b, offset:] = torch.arange(width - offset)
            segments.append(width - offset)
    index, tokens, rows, pos, tasks = [], [], [], [], []
    for i in range(len(sources)):
        s = len(sources[i])
        for j, token in enumerate(targets[i]):
            index.append(start[i] + s + j - 1)  # position t predicts token t + 1
            tokens.append(token)
            rows.append(i)
            pos.append(s + j)
            tasks.append(task_ids[i])
    cu = torch.tensor([0, *segments], dtype=torch.int32).cumsum(0, dtype=torch.int32)
    as_long = [torch.tensor(x, dtype=torch.long) for x in (index, tokens, rows, pos, tasks)]
    return ids, mask, labels, Packed(positions, *as_long, cu, max(segments))

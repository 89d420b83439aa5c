"""The llama GGUF tensor table: llama.cpp's rotary row order and its inverse. (The converter's output
is compared with transformers' own GGUF reading in test_embedded.py.)"""

from __future__ import annotations

import numpy as np

from stepdistill.gguf_llama import permute_rope, unpermute_rope


def test_rotary_row_order_round_trips_and_pairs_rows_as_llama_cpp_does():
    n_head, head_dim, hidden = 3, 4, 2
    w = np.arange(n_head * head_dim * hidden, dtype=np.float32).reshape(n_head * head_dim, hidden)
    permuted = permute_rope(w, n_head)
    # transformers rotates row r with row r + head_dim/2 of its head; llama.cpp keeps them adjacent
    assert [int(r[0]) // hidden for r in permuted[:head_dim]] == [0, 2, 1, 3]
    assert np.array_equal(unpermute_rope(permuted, n_head), w)
    assert np.array_equal(permute_rope(unpermute_rope(w, n_head), n_head), w)

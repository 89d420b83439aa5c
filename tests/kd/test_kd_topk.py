"""Top-k storage round trip and conversion of API teacher log-probs with the real SmolLM2 tokenizer."""

from __future__ import annotations

import math

import pytest
import torch

from stepdistill.errors import DataError
from stepdistill.kd.topk import (
    SparseTargets,
    align_to_target,
    api_logprobs_to_sparse,
    read_topk,
    target_key,
    write_topk,
)


def test_topk_round_trip_with_ragged_k(tmp_path):
    g = torch.Generator().manual_seed(0)
    a = SparseTargets(torch.randint(0, 49152, (5, 4), generator=g), -torch.rand(5, 4, generator=g) * 9)
    b = SparseTargets(torch.tensor([[7, 3]]), torch.tensor([[-0.1, -2.5]]))  # narrower: padded to 4
    path = tmp_path / "train.topk.safetensors"
    write_topk(path, {target_key("ex-1"): a, target_key("ex-2", "rationale"): b}, meta={"teacher": "tiny"})
    f = read_topk(path)
    assert len(f) == 2 and f.k == 4 and f.meta["teacher"] == "tiny"
    ga = f.get(target_key("ex-1"))
    assert torch.equal(ga.ids, a.ids) and ga.ids.dtype == torch.long
    assert torch.allclose(ga.logprobs, a.logprobs, atol=1e-2, rtol=1e-3)  # float16 storage
    gb = f.get(target_key("ex-2", "rationale"))
    assert gb.ids.tolist() == [[7, 3, -1, -1]]
    assert gb.logprobs[0, :2].tolist() == pytest.approx([-0.1, -2.5], abs=1e-3)
    assert gb.logprobs[0, 2:].tolist() == [float("-inf")] * 2
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temporary file
    with pytest.raises(DataError, match="no targets for 'ex-3"):
        f.get(target_key("ex-3"))


def test_reading_a_foreign_safetensors_file_names_the_field(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "x.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(DataError, match=r"x\.safetensors: field 'format'"):
        read_topk(path)


def _entry(token, lp, top):
    return {"token": token, "logprob": lp, "top": [[t, v] for t, v in top]}


def test_api_logprobs_conversion_real_tokenizer(smol_tokenizer):
    tok = smol_tokenizer
    entries = [
        _entry("B", math.log(0.9), [("B", math.log(0.9)), ("The", math.log(0.05))]),
        _entry("anks", math.log(0.8), [("anks", math.log(0.8)), ("ank", math.log(0.1))]),
        # " bank" is one student token; "  bank" (two spaces) is not: it is dropped
        _entry(
            " keep", math.log(0.5), [(" keep", math.log(0.5)), (" hold", math.log(0.3)), ("  bank", -3.0)]
        ),
        _entry(" money", math.log(0.7), [(" money", math.log(0.7))]),
    ]
    conv = api_logprobs_to_sparse(entries, tok)
    assert conv.text == "Banks keep money"
    assert conv.token_ids == tok("Banks keep money", add_special_tokens=False)["input_ids"]
    assert conv.dropped == 1
    t = conv.targets
    assert t.ids.shape == (4, 2)  # widest row: 2 entries
    one = lambda s: tok(s, add_special_tokens=False)["input_ids"][0]  # noqa: E731
    assert t.ids[2].tolist() == [one(" keep"), one(" hold")]
    assert t.logprobs[2, :2].tolist() == pytest.approx([math.log(0.5), math.log(0.3)])
    assert t.ids[0].tolist() == [one("B"), one("The")]
    assert t.ids[3].tolist() == [one(" money"), -1]
    # a target that is a run of the teacher's tokens (the completion's tail) gets its rows
    sub = align_to_target(conv, tok(" keep money", add_special_tokens=False)["input_ids"])
    assert torch.equal(sub.ids, t.ids[2:4])
    with pytest.raises(DataError, match="do not occur"):
        align_to_target(conv, tok("bank", add_special_tokens=False)["input_ids"])


def test_api_logprobs_tokenizer_mismatch_names_first_difference(smol_tokenizer):
    # A teacher whose tokenizer splits "Banks" as "Ban" + "ks" (the student says "B" + "anks").
    entries = [_entry("Ban", -0.1, []), _entry("ks", -0.2, []), _entry(" keep", -0.3, [])]
    with pytest.raises(DataError) as err:
        api_logprobs_to_sparse(entries, smol_tokenizer, source="train.jsonl", line=12)
    msg = str(err.value)
    assert msg.startswith("train.jsonl:12: field 'teacher_logprobs[0].token'")
    assert "'Ban'" in msg and "'B'" in msg


def test_api_logprobs_bad_structure(smol_tokenizer):
    with pytest.raises(DataError, match=r"teacher_logprobs\[1\]\.logprob"):
        api_logprobs_to_sparse([_entry("B", -0.1, []), {"token": "anks", "logprob": "x"}], smol_tokenizer)
    with pytest.raises(DataError, match=r"teacher_logprobs\[0\]\.top"):
        api_logprobs_to_sparse([{"token": "B", "logprob": -0.1, "top": [["B"]]}], smol_tokenizer)

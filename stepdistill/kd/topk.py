"""Sparse top-k teacher targets: storage next to the annotations, and conversion of API log-probs.

A top-k file is one safetensors file holding, for every key (an example id and task, see
`target_key`), the teacher's top-k token ids (int32) and log-probs (float16) at each target token:

    ids       [total_tokens, K] int32     -1 marks padding (fewer than K entries at a token)
    logprobs  [total_tokens, K] float16   -inf at padding
    offsets   [n_keys + 1]      int64     rows of key i are offsets[i]:offsets[i + 1]
    metadata  {"format": "stepdistill-topk/1", "keys": JSON list of keys, "k": K, ...user keys}
              optional "skipped": JSON list of keys deliberately left out (no KD term for them)

Rows of one key are its target tokens in order, aligned with the student's target tokens for that
key (the tokens the student is trained to emit). Writes are atomic (temporary file, then rename).

API teachers return, per generated token, {"token", "logprob", "top": [[token, logprob], ...]}
(Annotation.teacher_logprobs). `api_logprobs_to_sparse` maps those token strings to the student's
token ids. That only makes sense when the teacher tokenises like the student, so it first checks
that re-tokenising the teacher's text with the student tokenizer reproduces the teacher's tokens,
and raises a DataError naming the first mismatch otherwise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from stepdistill.data.io import atomic_write_bytes
from stepdistill.errors import DataError

FORMAT = "stepdistill-topk/1"
PARTIAL = "\ufffd"  # what a token holding part of a UTF-8 character decodes to


@dataclass
class SparseTargets:
    """Top-k teacher targets of one sequence: ids [T, K] (int, -1 = padding), logprobs [T, K]."""

    ids: torch.Tensor
    logprobs: torch.Tensor

    def __len__(self) -> int:
        return self.ids.shape[0]

    def __getitem__(self, rows: slice) -> SparseTargets:
        return SparseTargets(self.ids[rows], self.logprobs[rows])


def target_key(example_id: str, task: str = "label") -> str:
    """The key of an example's targets for one task ("label" or "rationale")."""
    return f"{example_id}\t{task}"


def _pad_to(t: SparseTargets, k: int) -> SparseTargets:
    extra = k - t.ids.shape[1]
    if extra == 0:
        return t
    ids = torch.nn.functional.pad(t.ids, (0, extra), value=-1)
    lps = torch.nn.functional.pad(t.logprobs.float(), (0, extra), value=float("-inf"))
    return SparseTargets(ids, lps)


def write_topk(
    path: str | os.PathLike, targets: Mapping[str, SparseTargets], meta: Mapping[str, str] | None = None
) -> None:
    """Write {key: SparseTargets} to one safetensors file (atomically); K is the widest entry."""
    keys = list(targets)
    for key, t in targets.items():
        if t.ids.ndim != 2 or t.ids.shape != t.logprobs.shape:
            raise ValueError(
                f"targets of '{key}': ids {tuple(t.ids.shape)} / logprobs {tuple(t.logprobs.shape)}"
            )
    k = max((t.ids.shape[1] for t in targets.values()), default=1)
    padded = [_pad_to(targets[key], k) for key in keys]
    lengths = torch.tensor([0] + [len(t) for t in padded], dtype=torch.int64)
    tensors = {
        "ids": torch.cat([t.ids.to(torch.int32) for t in padded])
        if padded
        else torch.zeros(0, k, dtype=torch.int32),
        "logprobs": (
            torch.cat([t.logprobs.to(torch.float16) for t in padded])
            if padded
            else torch.zeros(0, k, dtype=torch.float16)
        ),
        "offsets": lengths.cumsum(0),
    }
    header = {str(a): str(b) for a, b in (meta or {}).items()}
    header.update({"format": FORMAT, "keys": json.dumps(keys), "k": str(k)})
    atomic_write_bytes(path, save(tensors, metadata=header))


class TopKFile:
    """A top-k file loaded into memory; `get(key)` returns that key's SparseTargets."""

    def __init__(self, path: str | os.PathLike):
        from safetensors import safe_open

        self.path = str(path)
        if not Path(path).exists():
            raise DataError(self.path, None, None, "top-k targets file does not exist")
        with safe_open(self.path, framework="pt") as f:
            self.meta: dict[str, str] = dict(f.metadata() or {})
        if self.meta.get("format") != FORMAT:
            raise DataError(
                self.path, None, "format", f"expected '{FORMAT}', got {self.meta.get('format')!r}"
            )
        tensors = load_file(self.path)
        self._ids, self._logprobs, self._offsets = tensors["ids"], tensors["logprobs"], tensors["offsets"]
        keys = json.loads(self.meta["keys"])
        if len(keys) + 1 != len(self._offsets):
            raise DataError(self.path, None, "offsets", f"{len(self._offsets)} offsets for {len(keys)} keys")
        self.index = {key: i for i, key in enumerate(keys)}

    @property
    def k(self) -> int:
        return int(self.meta["k"])

    @cached_property
    def skipped(self) -> set[str]:
        """Keys the writer recorded as left out on purpose (their rows get no KD term)."""
        return set(json.loads(self.meta.get("skipped", "[]")))

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def __len__(self) -> int:
        return len(self.index)

    def get(self, key: str) -> SparseTargets:
        if key not in self.index:
            raise DataError(self.path, None, "keys", f"no targets for '{key}'")
        i = self.index[key]
        lo, hi = int(self._offsets[i]), int(self._offsets[i + 1])
        return SparseTargets(self._ids[lo:hi].long(), self._logprobs[lo:hi].float())


def read_topk(path: str | os.PathLike) -> TopKFile:
    return TopKFile(path)


@dataclass
class ConvertedLogprobs:
    """API log-probs mapped to the student's vocabulary: one row per generated teacher token."""

    targets: SparseTargets  # [T, K] over student token ids
    token_ids: list[int]  # the student's ids of the generated tokens (= re-tokenised teacher text)
    text: str  # the teacher's generated text (tokens joined)
    dropped: int  # alternatives that are not a single student token (their mass joins the rest)


def _check_entries(entries: Any, source: str, line: int | None) -> list[str]:
    if not isinstance(entries, list) or not entries:
        raise DataError(source, line, "teacher_logprobs", "expected a non-empty list of tokens")
    tokens = []
    for i, e in enumerate(entries):
        where = f"teacher_logprobs[{i}]"
        if not isinstance(e, dict) or not isinstance(e.get("token"), str):
            raise DataError(source, line, f"{where}.token", "expected a string")
        if not isinstance(e.get("logprob"), (int, float)):
            raise DataError(source, line, f"{where}.logprob", "expected a number")
        top = e.get("top") or []
        if not isinstance(top, list) or not all(
            isinstance(t, (list, tuple))
            and len(t) == 2
            and isinstance(t[0], str)
            and isinstance(t[1], (int, float))
            for t in top
        ):
            raise DataError(source, line, f"{where}.top", "expected a list of [token, logprob] pairs")
        tokens.append(e["token"])
    return tokens


def _same_token(a: str, b: str) -> bool:
    # Tokens holding part of a multi-byte character decode to U+FFFD and cannot be compared as text.
    return a == b or (PARTIAL in a and PARTIAL in b)


def check_token_alignment(
    tokens: Sequence[str], tokenizer: Any, source: str = "<teacher_logprobs>", line: int | None = None
) -> list[int]:
    """Student ids of "".join(tokens); DataError at the first token the student splits differently."""
    text = "".join(tokens)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = [tokenizer.decode([i]) for i in ids]
    for pos in range(max(len(tokens), len(pieces))):
        a = tokens[pos] if pos < len(tokens) else "<end>"
        b = pieces[pos] if pos < len(pieces) else "<end>"
        if not _same_token(a, b):
            raise DataError(
                source,
                line,
                f"teacher_logprobs[{pos}].token",
                f"tokenizer mismatch: the teacher's token {a!r} is {b!r} for the student tokenizer "
                "(re-tokenising the teacher's text must reproduce its tokens; use a teacher that shares "
                "the student's tokenizer, or a white-box teacher)",
            )
    return ids


def api_logprobs_to_sparse(
    entries: list[dict[str, Any]], tokenizer: Any, source: str = "<teacher_logprobs>", line: int | None = None
) -> ConvertedLogprobs:
    """Convert Annotation.teacher_logprobs into sparse targets over the student's token ids.

    Each row holds the generated token and its top alternatives that are single student tokens,
    sorted by log-prob; alternatives that are not (e.g. whitespace variants the student splits)
    are dropped and their mass falls into the rest bucket of the `rest` loss mode.
    """
    tokens = _check_entries(entries, source, line)
    ids = check_token_alignment(tokens, tokenizer, source, line)
    cache: dict[str, int | None] = {}
    rows: list[list[tuple[int, float]]] = []
    dropped = 0
    for tid, e in zip(ids, entries):
        row = {tid: float(e["logprob"])}
        for tok, lp in e.get("top") or []:
            if tok not in cache:
                enc = tokenizer(tok, add_special_tokens=False)["input_ids"]
                cache[tok] = enc[0] if len(enc) == 1 and tokenizer.decode(enc) == tok else None
            sid = cache[tok]
            if sid is None:
                dropped += 1
            elif sid not in row:
                row[sid] = float(lp)
        rows.append(sorted(row.items(), key=lambda x: -x[1]))
    k = max(len(r) for r in rows)
    out_ids = torch.full((len(rows), k), -1, dtype=torch.long)
    out_lp = torch.full((len(rows), k), float("-inf"))
    for i, r in enumerate(rows):
        out_ids[i, : len(r)] = torch.tensor([x[0] for x in r])
        out_lp[i, : len(r)] = torch.tensor([x[1] for x in r])
    return ConvertedLogprobs(SparseTargets(out_ids, out_lp), list(ids), "".join(tokens), dropped)


def align_to_target(
    conv: ConvertedLogprobs, target_ids: Sequence[int], where: str = "<target>"
) -> SparseTargets:
    """The rows of `conv` for the student target tokens `target_ids`, found as a contiguous run of
    the teacher's tokens (e.g. the rationale inside the teacher's full completion)."""
    n = len(target_ids)
    target = list(target_ids)
    for start in range(len(conv.token_ids) - n + 1):
        if conv.token_ids[start : start + n] == target:
            return conv.targets[start : start + n]
    raise DataError(
        where,
        None,
        "teacher_logprobs",
        "the student's target tokens do not occur as a run of the teacher's tokens",
    )

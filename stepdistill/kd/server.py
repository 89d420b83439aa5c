"""A teacher behind an OpenAI-compatible server that scores given text (kd.source: server).

On-policy distillation needs the teacher's distribution at every token the student sampled, i.e. the
log-probabilities of a PROMPT, not of a completion. llama.cpp's server (llama-cpp-python) gives them:
POST /v1/completions {"prompt": text, "echo": true, "logprobs": k, "max_tokens": 1} answers with
choices[0].logprobs.tokens / top_logprobs (token text -> log-prob) for every prompt token. Measured on
llama-cpp-python 0.3.36: top_logprobs[i] is the distribution AFTER prompt token i (it predicts token
i + 1), and token_logprobs[i] is token i's log-prob under that later distribution; so the targets of
token i are read from top_logprobs[i - 1] and token_logprobs is not used.

vLLM (kd.server.api: vllm) takes the student's token ids as the prompt and answers its
`prompt_logprobs` extension: choices[0].prompt_logprobs[i] is the distribution predicting token i
({token id: {"logprob", "rank", "decoded_token"}}: the top-k plus token i itself; None for token 0).
Token ids in, token ids out: nothing is re-tokenised, and every sampled token is scored.

llama.cpp's server takes text, not token ids, and tokenises it again. The student's tokens are therefore
matched to the server's one by one by their text (special tokens read "" on the server, partial UTF-8
characters lose their bytes); from the first token the server splits differently -- a student that
sampled a non-canonical split -- the rest of the row has no teacher targets (`valid` False, logged).
Each matched token gets sparse targets like kd/topk.py: the teacher's top-k alternatives whose text
names exactly one student token; an ambiguous text (special tokens all read "") is dropped and its
mass falls into the rest bucket (kd.sparse_mode "rest"), as does a sampled token outside the top-k.

`check` (run when the run starts) scores a probe and refuses a server that returns no prompt
log-probabilities, or ones that do not read as above (quoting its answer), or that reads the
student's tokens as other text (naming both vocabularies).
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import httpx
import torch

from stepdistill.errors import ConfigError, TeacherError
from stepdistill.kd.config import ServerTeacherConfig
from stepdistill.kd.preflight import PROBE
from stepdistill.kd.topk import PARTIAL, SparseTargets
from stepdistill.teachers.limits import backoff_delay, is_retryable

ATTEMPTS = 4  # a scoring request is retried on connection errors, 429 and 5xx, then the run stops


def _quote(text: str, limit: int = 600) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."


class ServerTeacher:
    """Scores token sequences through one server; `score(ids, start)` gives sparse targets for the
    tokens ids[start:] (each conditioned on all tokens before it)."""

    def __init__(self, cfg: ServerTeacherConfig, tokenizer: Any, k: int):
        self.cfg, self.k, self.tokenizer = cfg, k, tokenizer
        headers = {}
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise ConfigError(f"kd.server.api_key_env: environment variable {cfg.api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(base_url=cfg.base_url.rstrip("/"), headers=headers, timeout=cfg.timeout_s)
        self._rng = random.Random(0)
        # Text of each student token as the server names it (special tokens read "", bytes of a
        # partial UTF-8 character are dropped) -> its id, for the texts that name exactly one token:
        # llama-cpp-python keys its top-k by that text, so a shared text (" " is also the text of
        # tokens holding a space and part of a character) carries whichever of them came last.
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=True)
        owners: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            owners.setdefault(text.replace(PARTIAL, ""), []).append(i)
        self.id_of = {t: ids[0] for t, ids in owners.items() if len(ids) == 1 and t}
        self.texts = texts

    def _body(self, ids: list[int]) -> dict[str, Any]:
        scoring = {"model": self.cfg.model, "max_tokens": 1, "temperature": 0.0}
        if self.cfg.api == "vllm":
            return {**scoring, "prompt": ids, "prompt_logprobs": self.k}
        # Special tokens are sent as their text (eos as "<|im_end|>"): llama.cpp parses them back.
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        return {**scoring, "prompt": text, "echo": True, "logprobs": self.k}

    def _post(self, ids: list[int]) -> dict[str, Any]:
        body = self._body(ids)
        for attempt in range(ATTEMPTS):
            try:
                response = self.client.post("/completions", json=body)
            except httpx.TransportError as err:
                if attempt == ATTEMPTS - 1:
                    raise TeacherError(f"kd.server {self.cfg.base_url}: {err}") from None
            else:
                if response.status_code == 200:
                    return response.json()
                if not is_retryable(response.status_code) or attempt == ATTEMPTS - 1:
                    raise TeacherError(
                        f"kd.server {self.cfg.base_url} answered {response.status_code}: "
                        f"{_quote(response.text)}"
                    )
            time.sleep(backoff_delay(attempt, 0.5, 8.0, self._rng))
        raise AssertionError("unreachable")

    def score(self, ids: list[int], start: int) -> tuple[SparseTargets, torch.Tensor]:
        """Sparse teacher targets [len(ids) - start, K'] for the tokens ids[start:] (start >= 2) and
        which of them have targets (False from the first token the server splits differently)."""
        answer = self._post(ids)
        rows = self.prompt_rows(answer, ids)
        if rows is None:
            raise TeacherError(
                f"kd.server {self.cfg.base_url} returned no prompt log-probabilities: {_quote(str(answer))}"
            )
        wanted = rows[start:]
        valid = torch.tensor([r is not None for r in wanted], dtype=torch.bool)
        return _sparse([r if r is not None else {0: 0.0} for r in wanted]), valid

    def _reads_as(self, server_text: str, tid: int) -> bool:
        return server_text == self.texts[tid].replace(PARTIAL, "")

    def prompt_rows(self, answer: dict[str, Any], ids: list[int]) -> list[dict[int, float] | None] | None:
        """Per prompt token i: the teacher's top-k {student id: log-prob} at the position predicting
        it (None from the first token the server reads differently, and for token 0); None when the
        answer holds no prompt log-probabilities."""
        if self.cfg.api == "vllm":
            return _vllm_rows(answer, len(ids))
        return self._echo_rows(answer, ids)

    def _echo_rows(self, answer: dict[str, Any], ids: list[int]) -> list[dict[int, float] | None] | None:
        """prompt_rows from llama-cpp-python's echo answer.

        llama-cpp-python pairs prompt token i with the distribution AFTER it: top_logprobs[i] predicts
        token i + 1 (and token_logprobs[i] is token i's log-prob under that later distribution, so it
        is not used). The distribution predicting token i is therefore top_logprobs[i - 1]; `check`
        verifies that reading on a probe."""
        choice = (answer.get("choices") or [{}])[0]
        lp = choice.get("logprobs") or {}
        tokens, top = lp.get("tokens"), lp.get("top_logprobs")
        if not tokens or not top or len(top) != len(tokens) or not any(top[1:]):
            return None
        out: list[dict[int, float] | None] = [None]
        aligned = self._reads_as(tokens[0], ids[0])
        for i in range(1, len(ids)):
            aligned = aligned and i < len(tokens) and self._reads_as(tokens[i], ids[i])
            before = top[i - 1] if aligned else None  # the distribution predicting token i
            row = {self.id_of[t]: float(v) for t, v in (before or {}).items() if t in self.id_of}
            out.append(row or None)
        return out

    def check(self, student_name: str) -> None:
        """Score a probe: ConfigError when the server gives no prompt log-probabilities or reads the
        student's token ids as other text."""
        ids = self.tokenizer(PROBE, add_special_tokens=False)["input_ids"]
        try:
            answer = self._post(ids)
        except TeacherError as err:
            raise ConfigError(f"kd.server: the scoring probe failed: {err}") from None
        rows = self.prompt_rows(answer, ids)
        if rows is None:
            how = "prompt_logprobs" if self.cfg.api == "vllm" else "echo and logprobs"
            raise ConfigError(
                f"kd.server {self.cfg.base_url} (model {self.cfg.model!r}) cannot return prompt "
                f"log-probabilities (/v1/completions with {how}, kd.server.api {self.cfg.api}), which "
                f"on-policy scoring needs; it answered: {_quote(str(answer))}"
            )
        if self.cfg.api == "vllm":
            self._check_vllm_vocabulary(answer, ids, student_name)
            return
        found = [ids[i] in rows[i] for i in range(1, len(ids)) if rows[i] is not None]
        if len(found) < len(ids) // 2 or sum(found) < 0.5 * len(found):
            raise ConfigError(
                f"kd.server {self.cfg.base_url}: the prompt log-probabilities do not read as the "
                f"distribution before each token (only {sum(found)} of {len(found)} probe tokens are in "
                f"the top-{self.k} of the position predicting them); it answered: {_quote(str(answer))}"
            )
        tokens = answer["choices"][0]["logprobs"]["tokens"]
        for pos, (tid, text) in enumerate(zip(ids, tokens + [None] * (len(ids) - len(tokens)))):
            if text is None or not self._reads_as(text, tid):
                raise self._vocabulary_error(pos, tid, text, student_name)

    def _check_vllm_vocabulary(self, answer: dict[str, Any], ids: list[int], student_name: str) -> None:
        """The text vLLM decodes for each probe token id must be the student's text of that id."""
        entries = answer["choices"][0]["prompt_logprobs"]
        for pos in range(1, len(ids)):
            tid = ids[pos]
            mine = self.texts[tid]
            theirs = ((entries[pos] or {}).get(str(tid)) or {}).get("decoded_token")
            if PARTIAL not in mine and theirs not in (
                mine,
                self.tokenizer.decode([tid], skip_special_tokens=False),
            ):
                raise self._vocabulary_error(pos, tid, theirs, student_name)

    def _vocabulary_error(self, pos: int, tid: int, theirs: str | None, student_name: str) -> ConfigError:
        """Probe token `pos` (id `tid`) reads `theirs` on the server, not the student's text."""
        return ConfigError(
            f"kd.server: the teacher's vocabulary ({self.cfg.model!r} at {self.cfg.base_url}) "
            f"differs from the student vocabulary '{student_name}' ({len(self.tokenizer)} tokens): "
            f"token {pos} of the probe, id {tid}, reads {theirs!r} for the teacher and {self.texts[tid]!r} "
            "for the student; on-policy scoring needs one tokenizer"
        )


def _vllm_rows(answer: dict[str, Any], n: int) -> list[dict[int, float] | None] | None:
    """prompt_rows from vLLM's answer: prompt_logprobs[i] predicts token i, keyed by token id."""
    entries = ((answer.get("choices") or [{}])[0]).get("prompt_logprobs")
    if not isinstance(entries, list) or len(entries) != n or not any(entries[1:]):
        return None
    out: list[dict[int, float] | None] = [None]
    for entry in entries[1:]:
        row = {int(t): float(v["logprob"]) for t, v in (entry or {}).items()}
        out.append(row or None)
    return out


def _sparse(rows: list[dict[int, float]]) -> SparseTargets:
    """Rows of {id: log-prob} (the scored token first) -> ids / log-probs [n, K'] padded with -1 / -inf."""
    k = max(len(r) for r in rows)
    ids = torch.full((len(rows), k), -1, dtype=torch.long)
    lps = torch.full((len(rows), k), float("-inf"))
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row))
        lps[i, : len(row)] = torch.tensor(list(row.values()))
    return SparseTargets(ids, lps)

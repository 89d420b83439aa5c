"""A GGUF student run by llama.cpp in-process, answering `evaluate.predict_labels` like a PyTorch one.

    student = LlamaStudent.load(Path("runs/demo/standard-f1-s0/export/demo-q8_0.gguf"))
    rows = predict_labels(student, task, annotations, train_cfg, eval_cfg)   # same rows, same scoring

predict_labels builds the label-only prompt (`eval_source`), turns generated text into labels and
scores them; this class supplies the two model calls it makes, `generate` and `rank`, with llama.cpp
doing the arithmetic and llama.cpp's tokenizer (the one embedded in the file) cutting the text, so
what export measures is what a llama.cpp or Ollama user gets. Prompts are token ids built by the same
`encode_source` as the PyTorch student's; decoding is greedy (argmax) and stops at the tokenizer's
end-of-sequence token, as `model.generate(do_sample=False)` does. One example at a time: llama.cpp's
Python binding has no batched generation, and one request at a time is also how a server answers.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stepdistill.evaluate_config import EvalConfig
from stepdistill.export.gguf_file import EXTRA_KEY
from stepdistill.export.quantize import llama_cpp_module
from stepdistill.ranking import candidate_ids
from stepdistill.tasks.base import Task
from stepdistill.training.batching import encode_source
from stepdistill.training.config import TrainConfig


def default_threads() -> int:
    """Half the cores, llama.cpp's own default: on a busy machine, threads that wait for a core
    stall every matrix product (all of 2 shared cores: 700 ms per example, one core: 4 ms)."""
    return max(1, len(os.sched_getaffinity(0)) // 2)


class LlamaTokenizer:
    """The slice of a transformers tokenizer that encode_source and candidate_ids call, answered by
    llama.cpp's tokenizer. Special tokens written in the text are parsed as the transformers
    tokenizer does; BOS is added only where the file says the model was trained with it."""

    def __init__(self, llm):
        self.llm = llm
        self.eos_token_id = llm.token_eos()

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=add_special_tokens, special=True)
        return {"input_ids": ids}

    def decode(self, ids: Sequence[int]) -> str:
        """Text of generated ids without special tokens (transformers' skip_special_tokens=True)."""
        return self.llm.detokenize(list(ids), special=False).decode("utf-8", errors="replace")


class LlamaStudent:
    """A GGUF file loaded by llama.cpp; `generate` and `rank` mirror evaluate.generate and
    ranking.rank_labels for predict_labels. `kind` is "causal": only decoder students export."""

    kind = "causal"

    def __init__(self, path: Path, threads: int | None = None, n_ctx: int = 2048, ranking: bool = False):
        llama_cpp = llama_cpp_module()
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        self.path = Path(path)
        self.threads = threads or default_threads()
        # logits_all keeps every position's logits: ranking reads the candidate tokens' log-probs.
        self.llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            logits_all=ranking,
            verbose=False,
        )
        self.tokenizer = LlamaTokenizer(self.llm)

    def close(self) -> None:
        self.llm.close()

    def _greedy(self, prompt: list[int], max_new_tokens: int, stop_at: str | None) -> str:
        self.llm.reset()  # every example starts from an empty cache: no reuse between examples
        new: list[int] = []
        for token in self.llm.generate(prompt, temp=0.0, repeat_penalty=1.0, reset=False):
            if token == self.tokenizer.eos_token_id:
                break
            new.append(token)
            if len(new) >= max_new_tokens or (stop_at is not None and stop_at in self.tokenizer.decode(new)):
                break
        return self.tokenizer.decode(new).strip()

    def generate(
        self,
        sources: list[str],
        train_cfg: TrainConfig,
        eval_cfg: EvalConfig,
        max_new_tokens: int | None = None,
        stop_at: str | None = None,
    ) -> list[str]:
        """Greedy completions of `sources` (see evaluate.generate)."""
        budget = max_new_tokens or eval_cfg.max_new_tokens
        return [
            self._greedy(encode_source(self.tokenizer, s, train_cfg, "causal"), budget, stop_at)
            for s in sources
        ]

    def _logprob(self, source: list[int], target: list[int]) -> float:
        """Sum of log p(target tokens | source, earlier target tokens)."""
        self.llm.reset()
        self.llm.eval(source + target)
        logits = np.asarray(
            self.llm.scores[len(source) - 1 : len(source) + len(target) - 1], dtype=np.float64
        )
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))  # [target, vocab]
        return float(logp[np.arange(len(target)), target].sum())

    def rank(
        self,
        task: Task,
        sources: list[str],
        candidates: list[Sequence[str]],
        train_cfg: TrainConfig,
        eval_cfg: EvalConfig,
    ) -> tuple[list[str], list[list[float]]]:
        """(the best candidate, every candidate's score) per source (see ranking.rank_labels)."""
        best, table = [], []
        for source, cands in zip(sources, candidates):
            ids = encode_source(self.tokenizer, source, train_cfg, "causal")
            scores = [
                self._logprob(ids, candidate_ids(self.tokenizer, task, c, train_cfg.method, train_cfg))
                for c in cands
            ]
            best.append(cands[max(range(len(cands)), key=lambda j: (scores[j], -j))])
            table.append(scores)
        return best, table


def stored_settings(path: Path) -> dict[str, Any]:
    """What export stored in a GGUF file about its student (task, method, prompt settings); {} when
    the file was not written by `stepdistill export`. Reads the metadata only, not the weights."""
    llama_cpp = llama_cpp_module()
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        raw = llm.metadata.get(EXTRA_KEY)
    finally:
        llm.close()
    return json.loads(raw) if raw else {}

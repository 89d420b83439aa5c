"""Teacher on a local transformers causal LM: a hub id, a folder, or a GGUF file (dequantised).

`teacher.model: embedded:smollm2` (or `smollm2`) is the offline SmolLM2-135M-Instruct GGUF. Prompts are
generated in batches of `batch_size`; the chat template is used when the tokenizer has one and
prompt_format allows it. Jobs are grouped by sample index so each batch runs under one seed
(seed + sample) and repeats exactly.

Prefix cache: few-shot prompts share a long beginning (instruction + exemplars, ~90% of each
prompt), and on a CPU reading it dominates the cost. The tokens every prompt of a call starts with
are therefore run through the model once; each batch starts from a copy of that key/value cache,
expanded to the batch size, and reads only its own questions. A batch is laid out as

    [shared prefix][padding][question]      attention mask 1...1 0...0 1...1

so every row still ends where generation starts; positions come from the mask (padding takes
none), so each row sees exactly the tokens and positions it has in the plain left-padded batch,
and greedy answers match the plain path. Models whose cache is not a plain `DynamicCache`
(sliding-window or hybrid layers, encoder-decoders) and calls without a shared prefix take the
plain path; `batches` counts which path each batch took.

Several samples of one prompt (annotate.samples: k, temperature > 0) read the prompt once: a batch
holds whole prompts with all their wanted samples; every prompt's tokens but the last run through
the model once (after the shared prefix), the cache is then expanded to one row per sample
(`batch_select_indices` with repeated indices) and generation starts from each prompt's last token.
Without it, k samples cost k readings of each prompt (the prompt's own part; the shared prefix is
cached either way). A batch then holds max(1, batch_size // k) prompts, i.e. about batch_size rows.
"""

from __future__ import annotations

import copy
import inspect
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from stepdistill.embedded import EMBEDDED_SMOLLM2, resolve_model
from stepdistill.errors import TeacherError
from stepdistill.teachers.base import Completion, Job, Prompt, Sampling, Teacher
from stepdistill.teachers.config import TeacherConfig

EMBEDDED_NAMES = (EMBEDDED_SMOLLM2, "smollm2")
# Below this many shared tokens a cached prefix saves less than the cache copy costs.
MIN_PREFIX_TOKENS = 16
PREFIX_PATH, PLAIN_PATH, SAMPLES_PATH = "prefix_cache", "plain", "prompt_once"


def resolve_source(cfg: TeacherConfig) -> tuple[str, str | None]:
    """(folder or hub id, gguf file name) for cfg.model."""
    if cfg.model in EMBEDDED_NAMES:
        return resolve_model(EMBEDDED_SMOLLM2, cfg.gguf_file)
    if cfg.model.endswith(".gguf"):
        path = Path(cfg.model)
        if not path.is_file():
            raise TeacherError(f"teacher.model: GGUF file {path} does not exist")
        return str(path.parent), path.name
    if not cfg.model:
        raise TeacherError("teacher.model: the hf_local backend needs a hub id, folder or .gguf file")
    return cfg.model, cfg.gguf_file


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Text before the earliest stop string (generation halts after the stop string, not before)."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def shared_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own to read."""
    if not rows:
        return 0
    first, n = rows[0], min(len(r) for r in rows) - 1
    for row in rows[1:]:
        n = next((i for i in range(n) if row[i] != first[i]), n)
    return max(n, 0)


def layout_rows(
    rows: Sequence[Sequence[int]], prefix_len: int, pad_id: int
) -> tuple[list[list[int]], list[list[int]]]:
    """(input ids, attention mask) of a batch whose first prefix_len tokens are shared:
    prefix, then padding, then each row's own tokens, so that every row ends at the same column."""
    width = max(len(r) for r in rows) - prefix_len
    ids, mask = [], []
    for row in rows:
        own = list(row[prefix_len:])
        gap = width - len(own)
        ids.append(list(row[:prefix_len]) + [pad_id] * gap + own)
        mask.append([1] * prefix_len + [0] * gap + [1] * len(own))
    return ids, mask


def is_plain_dynamic_cache(cache: Any) -> bool:
    """True for a DynamicCache whose every layer is a full-length DynamicLayer (the only kind that
    keeps a whole prefix and can be expanded along the batch)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    layers = getattr(cache, "layers", None)
    return isinstance(cache, DynamicCache) and bool(layers) and all(type(x) is DynamicLayer for x in layers)


class HFLocalTeacher(Teacher):
    def __init__(self, model: Any, tokenizer: Any, cfg: TeacherConfig, prefix_cache: bool = True):
        self.model, self.tok, self.cfg = model, tokenizer, cfg
        self.identity = f"hf_local:{cfg.model}"
        has_template = bool(getattr(tokenizer, "chat_template", None))
        self.use_chat = cfg.prompt_format == "chat" or (cfg.prompt_format == "auto" and has_template)
        self.prefix_cache = prefix_cache and self._cache_supported()
        self.prompt_once = True  # several samples of a prompt read it once (False: once per sample)
        self._prefix: tuple[tuple[int, ...], Any] | None = None  # (token ids, their cache, batch 1)
        self.batches: Counter[str] = Counter()  # batches generated per path (PREFIX_PATH, PLAIN_PATH)

    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> HFLocalTeacher:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        src, gguf = resolve_source(cfg)
        kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
        if gguf:
            kwargs["gguf_file"] = gguf
        try:
            tok = AutoTokenizer.from_pretrained(src, **kwargs)
            # safetensors only (never unpickle weights); a GGUF file is read by its own loader
            safe = {} if gguf else {"use_safetensors": True}
            if cfg.dtype != "auto":
                safe["dtype"] = getattr(torch, cfg.dtype)
            model = AutoModelForCausalLM.from_pretrained(src, **kwargs, **safe)
        except (OSError, ValueError) as err:
            raise TeacherError(f"teacher.model: cannot load '{cfg.model}': {err}") from None
        tok.padding_side = "left"  # decoder-only batches must end where generation starts
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device).eval(), tok, cfg)

    def _cache_supported(self) -> bool:
        """The prefix path needs a decoder-only model that takes a `cache` and builds plain layers."""
        from transformers import DynamicCache

        config = getattr(self.model, "config", None)
        if config is None or getattr(config, "is_encoder_decoder", False):
            return False
        if "cache" not in inspect.signature(self.model.forward).parameters:
            return False
        return is_plain_dynamic_cache(DynamicCache(config=config))

    def render(self, prompt: Prompt) -> str:
        if self.use_chat:
            return self.tok.apply_chat_template(
                list(prompt.messages), tokenize=False, add_generation_prompt=True
            )
        return prompt.text

    def encode(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """Token ids of each rendered prompt, unpadded."""
        texts = [self.render(p) for p in prompts]
        # A chat template already writes the special tokens; plain text gets the tokenizer's own.
        return self.tok(texts, add_special_tokens=not self.use_chat)["input_ids"]

    def prefix_for(self, rows: Sequence[Sequence[int]]) -> tuple[tuple[int, ...], Any] | None:
        """The cached shared prefix to start these rows from, computed when none fits; None: plain path.
        A stored prefix is reused whenever every row starts with it (e.g. the next split's prompts)."""
        if not self.prefix_cache or not rows:
            return None
        if self._prefix is not None:
            ids = self._prefix[0]
            if all(len(r) > len(ids) and tuple(r[: len(ids)]) == ids for r in rows):
                return self._prefix
        n = shared_prefix_length(rows)
        if len(rows) < 2 or n < MIN_PREFIX_TOKENS:  # one prompt shares nothing worth keeping
            return None
        self._prefix = (tuple(rows[0][:n]), self._run_prefix(rows[0][:n]))
        return self._prefix

    def _run_prefix(self, ids: Sequence[int]) -> Any:
        import torch
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        with torch.no_grad():
            out = self.model(
                input_ids=torch.tensor([list(ids)], device=self.model.device), cache=cache, use_cache=True
            )
        return out.cache

    def _batch_inputs(self, rows: list[list[int]], prefix: tuple[tuple[int, ...], Any] | None) -> dict:
        import torch

        device = self.model.device
        if prefix is None:
            enc = self.tok.pad({"input_ids": rows}, return_tensors="pt")  # left padding
            return {k: enc[k].to(device) for k in ("input_ids", "attention_mask")}
        ids, mask = layout_rows(rows, len(prefix[0]), self.tok.pad_token_id)
        cache = copy.deepcopy(prefix[1])  # generate extends the cache in place; keep the prefix intact
        cache.batch_repeat_interleave(len(rows))
        return {
            "input_ids": torch.tensor(ids, device=device),
            "attention_mask": torch.tensor(mask, device=device),
            "cache": cache,
        }

    def _generation_kwargs(self, sampling: Sampling) -> dict[str, Any]:
        gen: dict[str, Any] = {"max_new_tokens": sampling.max_tokens, "pad_token_id": self.tok.pad_token_id}
        if sampling.temperature > 0:
            gen.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            gen.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if sampling.stop:
            gen.update(stop_strings=list(sampling.stop), tokenizer=self.tok)
        return gen

    def generate_rows(
        self,
        rows: list[list[int]],
        sampling: Sampling,
        sample: int,
        prefix: tuple[tuple[int, ...], Any] | None = None,
    ) -> list[Completion]:
        """Completions of tokenised prompts, as one batch; `prefix` (from prefix_for) skips re-reading
        the tokens the rows share."""
        import torch

        inputs = self._batch_inputs(rows, prefix)
        if (seed := sampling.seed_for(sample)) is not None:
            torch.manual_seed(seed)
        with torch.no_grad():
            out = self.model.generate(**inputs, **self._generation_kwargs(sampling))  # [batch, width + new]
        self.batches[PLAIN_PATH if prefix is None else PREFIX_PATH] += 1
        return self._decode(out[:, inputs["input_ids"].shape[1] :].tolist(), rows, sampling)

    def _decode(self, new: list[list[int]], rows: list[list[int]], sampling: Sampling) -> list[Completion]:
        comps = []
        for ids, row in zip(new, rows):
            if self.tok.eos_token_id in ids:  # tokens after EOS are padding
                ids = ids[: ids.index(self.tok.eos_token_id) + 1]
            text = cut_at_stop(self.tok.decode(ids, skip_special_tokens=True), sampling.stop)
            comps.append(Completion(text=text, prompt_tokens=len(row), completion_tokens=len(ids)))
        return comps

    def sample_rows(
        self,
        rows: list[list[int]],
        counts: list[int],
        sampling: Sampling,
        sample: int,
        prefix: tuple[tuple[int, ...], Any] | None = None,
    ) -> list[list[Completion]]:
        """counts[i] completions of each tokenised prompt rows[i], each prompt read once (see the
        module docstring); generation runs under the seed of `sample` (the batch's first sample)."""
        import torch
        from transformers import DynamicCache

        device = self.model.device
        plen = len(prefix[0]) if prefix is not None else 0
        ids, mask = layout_rows(rows, plen, self.tok.pad_token_id)
        ids_t, mask_t = torch.tensor(ids, device=device), torch.tensor(mask, device=device)
        if prefix is not None:
            cache = copy.deepcopy(prefix[1])  # the stored prefix stays intact for the next batch
            cache.batch_repeat_interleave(len(rows))
        else:
            cache = DynamicCache(config=self.model.config)
        positions = (mask_t.cumsum(-1) - 1).masked_fill(mask_t == 0, 1)  # as generate derives them
        if ids_t.shape[1] - 1 > plen:  # every prompt's own tokens but the last, read once
            with torch.no_grad():
                self.model(input_ids=ids_t[:, plen:-1], attention_mask=mask_t[:, :-1],
                           position_ids=positions[:, plen:-1], cache=cache, use_cache=True)  # fmt: skip
        expand = torch.tensor([i for i, n in enumerate(counts) for _ in range(n)], device=device)
        cache.batch_select_indices(expand)  # one row per sample  # [sum(counts), ...]
        if (seed := sampling.seed_for(sample)) is not None:
            torch.manual_seed(seed)
        with torch.no_grad():
            out = self.model.generate(input_ids=ids_t[expand], attention_mask=mask_t[expand], cache=cache,
                                      **self._generation_kwargs(sampling))  # fmt: skip
        self.batches[SAMPLES_PATH] += 1
        comps = self._decode(out[:, ids_t.shape[1] :].tolist(), [rows[i] for i in expand.tolist()], sampling)
        grouped, start = [], 0
        for n in counts:
            grouped.append(comps[start : start + n])
            start += n
        return grouped

    def generate_batch(self, prompts: list[Prompt], sampling: Sampling, sample: int) -> list[Completion]:
        """Completions of prompts as one batch, through the prefix cache when they share a prefix."""
        rows = self.encode(prompts)
        return self.generate_rows(rows, sampling, sample, self.prefix_for(rows))

    async def stream(self, jobs: Sequence[Job], sampling: Sampling) -> AsyncIterator[tuple[Job, Completion]]:
        bs = self.cfg.batch_size
        rows = self.encode([j.prompt for j in jobs])
        prefix = self.prefix_for(rows)  # shared by every batch of the call, computed once
        path = f"prefix cache ({len(prefix[0])} shared tokens read once)" if prefix else "plain"
        print(f"[hf_local] {len(jobs)} prompts, batches of {bs}, {path}", flush=True)
        by_prompt: dict[tuple[int, ...], list[int]] = {}  # job indices of each distinct prompt
        for i, row in enumerate(rows):
            by_prompt.setdefault(tuple(row), []).append(i)
        k = max(len(v) for v in by_prompt.values()) if by_prompt else 1
        if (
            sampling.temperature > 0 and k > 1 and self.prefix_cache and self.prompt_once
        ):  # each prompt read once
            groups = list(by_prompt.values())
            per_batch = max(1, bs // k)
            for start in range(0, len(groups), per_batch):
                batch = groups[start : start + per_batch]
                first = min(jobs[i].sample for g in batch for i in g)
                done = self.sample_rows(
                    [rows[g[0]] for g in batch], [len(g) for g in batch], sampling, first, prefix
                )
                for g, comps in zip(batch, done):
                    for i, comp in zip(g, comps):
                        yield jobs[i], comp
            return
        for sample in sorted({j.sample for j in jobs}):
            group = [i for i, j in enumerate(jobs) if j.sample == sample]
            for start in range(0, len(group), bs):
                idx = group[start : start + bs]
                comps = self.generate_rows([rows[i] for i in idx], sampling, sample, prefix)
                for i, comp in zip(idx, comps):
                    yield jobs[i], comp

    def close(self) -> None:
        self.model = None
        self._prefix = None

"""Teacher on a local transformers causal LM: a hub id, a folder, or a GGUF file (dequantised).

`teacher.model: embedded:smollm2` (or `smollm2`) is the offline SmolLM2-135M-Instruct GGUF. Prompts are
generated in batches of `batch_size` with left padding (so every row's answer starts at the same
position); the chat template is used when the tokenizer has one and prompt_format allows it. Jobs are
grouped by sample index so each batch runs under one seed (seed + sample) and repeats exactly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from stepdistill.errors import TeacherError
from stepdistill.teachers.base import Completion, Job, Prompt, Sampling, Teacher
from stepdistill.teachers.config import TeacherConfig

EMBEDDED_NAMES = ("embedded:smollm2", "smollm2")


def resolve_source(cfg: TeacherConfig) -> tuple[str, str | None]:
    """(folder or hub id, gguf file name) for cfg.model."""
    if cfg.model in EMBEDDED_NAMES:
        from stepdistill.embedded import GGUF_NAME, smollm2_dir

        return str(smollm2_dir()), cfg.gguf_file or GGUF_NAME
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


class HFLocalTeacher(Teacher):
    def __init__(self, model: Any, tokenizer: Any, cfg: TeacherConfig):
        self.model, self.tok, self.cfg = model, tokenizer, cfg
        self.identity = f"hf_local:{cfg.model}"
        has_template = bool(getattr(tokenizer, "chat_template", None))
        self.use_chat = cfg.prompt_format == "chat" or (cfg.prompt_format == "auto" and has_template)

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
            model = AutoModelForCausalLM.from_pretrained(src, **kwargs)
        except (OSError, ValueError) as err:
            raise TeacherError(f"teacher.model: cannot load '{cfg.model}': {err}") from None
        tok.padding_side = "left"  # decoder-only batches must end where generation starts
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device).eval(), tok, cfg)

    def render(self, prompt: Prompt) -> str:
        if self.use_chat:
            return self.tok.apply_chat_template(
                list(prompt.messages), tokenize=False, add_generation_prompt=True
            )
        return prompt.text

    def generate_batch(self, prompts: list[Prompt], sampling: Sampling, sample: int) -> list[Completion]:
        import torch

        texts = [self.render(p) for p in prompts]
        # A chat template already writes the special tokens; plain text gets the tokenizer's own.
        enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=not self.use_chat)
        enc = enc.to(self.model.device)
        gen: dict[str, Any] = {"max_new_tokens": sampling.max_tokens, "pad_token_id": self.tok.pad_token_id}
        if sampling.temperature > 0:
            gen.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            gen.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if sampling.stop:
            gen.update(stop_strings=list(sampling.stop), tokenizer=self.tok)
        if (seed := sampling.seed_for(sample)) is not None:
            torch.manual_seed(seed)
        with torch.no_grad():
            out = self.model.generate(**enc, **gen)  # [batch, prompt_len + new]
        new = out[:, enc["input_ids"].shape[1] :]
        comps = []
        for row, mask in zip(new, enc["attention_mask"]):
            ids = row.tolist()
            if self.tok.eos_token_id in ids:  # tokens after EOS are padding
                ids = ids[: ids.index(self.tok.eos_token_id) + 1]
            text = cut_at_stop(self.tok.decode(ids, skip_special_tokens=True), sampling.stop)
            comps.append(Completion(text=text, prompt_tokens=int(mask.sum()), completion_tokens=len(ids)))
        return comps

    async def stream(self, jobs: Sequence[Job], sampling: Sampling) -> AsyncIterator[tuple[Job, Completion]]:
        bs = self.cfg.batch_size
        for sample in sorted({j.sample for j in jobs}):
            group = [j for j in jobs if j.sample == sample]
            for start in range(0, len(group), bs):
                batch = group[start : start + bs]
                for job, comp in zip(batch, self.generate_batch([j.prompt for j in batch], sampling, sample)):
                    yield job, comp

    def close(self) -> None:
        self.model = None

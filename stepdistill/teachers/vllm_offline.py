"""Teacher on vLLM's offline engine (`pip install stepdistill[vllm]`, a CUDA machine).

vLLM batches internally, so the whole job list goes to one `LLM.generate` (plain prompts) or
`LLM.chat` (message lists) call with one SamplingParams per job: each sample carries its own seed.
Results come back in job order; they are yielded (and cached) when the call returns, so on this
backend an interrupted run repeats the whole call; keep splits small or use `vllm serve` with the
openai_http backend when resumability matters more than raw speed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from stepdistill.errors import TeacherError
from stepdistill.teachers.base import Completion, Job, Sampling, Teacher
from stepdistill.teachers.config import TeacherConfig
from stepdistill.teachers.hf_local import resolve_source


def _logprobs(output: Any) -> list[dict[str, Any]] | None:
    """vLLM's per-position {token_id: Logprob} dicts -> the schema's [{"token", "logprob", "top"}]."""
    if not output.logprobs:
        return None
    rows = []
    for token_id, position in zip(output.token_ids, output.logprobs):
        chosen = position[token_id]
        ranked = sorted(position.values(), key=lambda lp: -lp.logprob)
        rows.append(
            {
                "token": chosen.decoded_token,
                "logprob": float(chosen.logprob),
                "top": [[lp.decoded_token, float(lp.logprob)] for lp in ranked],
            }
        )
    return rows


class VLLMTeacher(Teacher):
    def __init__(self, llm: Any, sampling_cls: Any, cfg: TeacherConfig):
        self.llm, self.sampling_cls, self.cfg = llm, sampling_cls, cfg
        self.identity = f"vllm:{cfg.model}"
        self.use_chat = cfg.prompt_format != "text"

    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> VLLMTeacher:
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise TeacherError(
                "teacher.backend 'vllm' needs the vllm package: pip install 'stepdistill[vllm]' "
                "(or serve the model with `vllm serve` and use backend openai_http)"
            ) from None
        src, gguf = resolve_source(cfg)
        model = f"{src}/{gguf}" if gguf else src
        return cls(
            LLM(model=model, trust_remote_code=cfg.trust_remote_code, dtype=cfg.dtype), SamplingParams, cfg
        )

    def _params(self, sampling: Sampling, sample: int) -> Any:
        return self.sampling_cls(
            n=1,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            stop=list(sampling.stop) or None,
            seed=sampling.seed_for(sample),
            logprobs=sampling.top_logprobs,
        )

    async def stream(self, jobs: Sequence[Job], sampling: Sampling) -> AsyncIterator[tuple[Job, Completion]]:
        params = [self._params(sampling, j.sample) for j in jobs]
        if self.use_chat:
            outputs = self.llm.chat([list(j.prompt.messages) for j in jobs], params, use_tqdm=True)
        else:
            outputs = self.llm.generate([j.prompt.text for j in jobs], params, use_tqdm=True)
        for job, out in zip(jobs, outputs):
            best = out.outputs[0]
            yield (
                job,
                Completion(
                    text=best.text,
                    prompt_tokens=len(out.prompt_token_ids or []),
                    completion_tokens=len(best.token_ids),
                    logprobs=_logprobs(best),
                ),
            )

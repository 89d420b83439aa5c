"""Teacher and annotation sections of the config.

`teacher` says which LLM answers and how to reach it; `annotate` says what to ask it (splits,
self-consistency samples, gold filtering). Every default below is chosen for a paid API: bounded
concurrency, retries with backoff, nothing sent twice.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TeacherConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["openai_http", "hf_local", "vllm", "precomputed", "litellm"]
    # openai_http/litellm: the served model name; hf_local/vllm: hub id, local dir, .gguf file, or
    # "smollm2" for the embedded offline model; precomputed: a name recorded as teacher_model.
    model: str = ""

    # --- prompting (all backends that generate) ---
    exemplars: str | None = None  # JSON file of few-shot exemplars; default: the task's shipped file
    prompt_template: str | None = None  # str.format template; default: the exemplar file's
    system_prompt: str | None = None  # chat instruction; default: the exemplar file's
    prompt_format: Literal["auto", "chat", "text"] = "auto"  # auto: chat endpoint/template when present

    # --- sampling ---
    max_tokens: int = Field(256, gt=0)  # a CoT rationale is 1-4 sentences; 256 leaves room to finish
    temperature: float = Field(0.0, ge=0)  # greedy, as in the paper; self-consistency uses annotate's
    top_p: float = Field(1.0, gt=0, le=1)
    stop: list[str] | None = None  # default: the exemplar file's (the next "Q:" of a run-on exemplar)
    seed: int | None = 0  # sample i is sent with seed + i so self-consistency samples differ
    top_logprobs: int | None = Field(None, ge=0, le=20)  # openai_http: store per-token top-k logprobs

    # --- openai_http ---
    base_url: str = "http://127.0.0.1:8080/v1"
    endpoint: Literal["chat", "completions"] = "chat"
    api_key_env: str | None = None  # NAME of the environment variable holding the key (never the key)
    concurrency: int = Field(8, ge=1)  # requests in flight at once
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(6, ge=0)  # per request, on 408/409/429/5xx, timeouts, connection errors
    backoff_base_s: float = Field(1.0, ge=0)  # delay before retry k: base * 2**k, halved by jitter
    backoff_max_s: float = Field(60.0, ge=0)
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    extra_body: dict[str, Any] = Field(default_factory=dict)  # extra JSON fields sent with each request
    # annotate.samples > 1: ask for a prompt's k samples in one request with n = k (the server reads
    # the prompt once: vLLM, OpenAI). Off: k requests (llama.cpp's server answers one choice).
    samples_per_request: bool = False

    # --- hf_local / vllm ---
    gguf_file: str | None = None  # GGUF file name inside `model` (a folder)
    batch_size: int = Field(8, ge=1)
    device: str = "auto"  # auto: cuda when available, else cpu
    # Weights' dtype: auto keeps the checkpoint's (float32 for the embedded model). bfloat16 halves
    # the bytes each generated token reads, which is what bounds generation on a CPU.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False

    # --- precomputed ---
    path: str | None = None  # JSONL file or folder of {"id", "completion"} / annotated JSONL rows

    # --- cost (USD per million tokens; unset: cost not reported) ---
    price_input_per_mtok: float | None = Field(None, ge=0)
    price_output_per_mtok: float | None = Field(None, ge=0)


class AnnotateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    splits: list[str] = ["train", "valid", "test"]
    samples: int = Field(1, ge=1)  # >1: self-consistency, label by majority vote over the samples
    sample_temperature: float = Field(0.7, gt=0)  # temperature used when samples > 1
    # Parse health: stop early when more than this share of the first `parse_check` answers of a
    # split do not parse (no exemplars, another answer phrase): fix the prompt before paying for
    # the rest. 1.0 never stops.
    max_parse_failure_share: float = Field(0.2, ge=0, le=1)
    parse_check: int = Field(10, ge=1)
    gold_filter: bool = False  # drop rationales whose teacher label disagrees with gold
    gold_filter_splits: list[str] = ["train", "valid"]  # never filter test: it would leak gold
    progress: bool = True  # tqdm progress bar
    # false: `annotate` exits non-zero and `run` stops before training while some examples have no
    # answer (a re-run asks only for those); true: train on what was answered.
    allow_incomplete: bool = False

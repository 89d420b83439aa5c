"""Soft-target distillation section of the config (`kd:`); absent means no soft-target term.

The soft-target term combines with every training method: total = (1 - weight) * CE + weight * KD,
where CE is the method's usual hard-label loss on the chosen targets (for step_by_step: the label
task's CE; the rationale task keeps its plain CE unless "rationale" is in `tasks`).

`on_policy` (kd/on_policy.py) makes the student write the KD term's targets on a share `lmbda` of the
steps: the teacher then grades the student's own samples with the same divergence (`loss`,
`jsd_beta`, `temperature`), while the CE term stays on the data's rows.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class OnPolicyConfig(BaseModel):
    """On-policy distillation (GKD, Agarwal et al. 2024): on a share `lmbda` of the optimizer steps the
    student samples the targets of its KD rows and the teacher scores every sampled token."""

    model_config = ConfigDict(extra="forbid")

    # Share of optimizer steps whose KD targets are the student's own samples, drawn per step from
    # (train.seed, step): 0 is off-policy KD exactly; 1 is purely on-policy (GKD's best runs use 0.5-1).
    lmbda: float = Field(1.0, ge=0, le=1)
    # Temperature of the student's sampling (1 = its own distribution, what on-policy theory assumes;
    # lower makes samples greedier and the student sees less of its own mistakes).
    sample_temperature: float = Field(1.0, gt=0)
    # Cap on sampled tokens per row; default train.max_target_length, the cap of the data's targets.
    # A sample cut here is scored as it is (no eos) and counted in metrics.json.
    max_new_tokens: int | None = Field(None, ge=1)


class ServerTeacherConfig(BaseModel):
    """An OpenAI-compatible server that scores given text (kd.source: server; kd/server.py)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str  # e.g. http://127.0.0.1:8080/v1 (llama.cpp's server, or vLLM's)
    model: str  # the model name the server knows
    # How the server returns a prompt's log-probabilities (kd/server.py):
    #   llama.cpp: /v1/completions with echo and logprobs on the prompt's text (llama-cpp-python)
    #   vllm: /v1/completions with vLLM's prompt_logprobs on the student's token ids
    api: Literal["llama.cpp", "vllm"] = "llama.cpp"
    api_key_env: str | None = None  # NAME of the environment variable holding the key (never the key)
    timeout_s: float = Field(120.0, gt=0)  # per scoring request


class KDConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # forward_kl = KL(teacher || student), mass-covering, the classic Hinton KD;
    # reverse_kl = KL(student || teacher), mode-seeking; jsd interpolates (see jsd_beta).
    loss: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
    temperature: float = Field(1.0, gt=0)  # both distributions are softened by it; loss scaled by T^2
    weight: float = Field(0.5, ge=0, le=1)  # total = (1 - weight) * CE + weight * KD
    # JSD mixing m = beta*teacher + (1-beta)*student, GKD's convention: beta 0 is forward KL and
    # beta 1 reverse KL (the limits of JSD / beta and JSD / (1 - beta); kd/losses.py).
    jsd_beta: float = Field(0.5, ge=0, le=1)
    # Which task's target tokens receive the KD term ("label", "rationale", or both).
    tasks: list[Literal["label", "rationale"]] = Field(default_factory=lambda: ["label"])

    # Where teacher probabilities come from:
    #   whitebox: a local transformers model sharing the student's tokenizer, run online
    #   topk_file: precomputed sparse top-k targets (kd/topk.py) next to the annotations
    #   server: an OpenAI-compatible server scoring the text online, top-k sparse (kd.on_policy only)
    source: Literal["whitebox", "topk_file", "server"] = "whitebox"
    server: ServerTeacherConfig | None = None  # kd.source: server
    teacher_model: str | None = None  # local directory (or hub id when cached) of the white-box teacher
    teacher_gguf_file: str | None = None  # load the teacher from this GGUF inside teacher_model
    teacher_device: str | None = None  # default: the student's device
    teacher_dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    trust_remote_code: bool = False
    topk_file: str | None = None  # safetensors file written by kd/topk.py (source: topk_file)
    topk: int = Field(20, ge=1)  # entries kept per target token when sparse targets are used
    # sparse targets: "rest" keeps the mass outside the top-k as one extra bucket on both sides;
    # "renormalize" renormalises teacher and student over the top-k ids only.
    sparse_mode: Literal["rest", "renormalize"] = "rest"
    warn_ratio: float = Field(0.01, ge=0)  # warn once when weight*KD < warn_ratio * (1-weight)*CE
    # Closed label sets (tasks with `labels`): the label task's KD term compares the teacher's and the
    # student's distributions over the label strings (each label scored by its summed token log-probs)
    # instead of the per-token distributions of the label tokens.
    label_distribution: bool = False
    # teacher: score the label strings with the white-box teacher (kd.teacher_model);
    # annotations: read them off the API log-probs stored in the annotations (teacher_logprobs).
    label_distribution_from: Literal["teacher", "annotations"] = "teacher"
    # The student samples the KD rows' targets on a share of the steps (see OnPolicyConfig).
    on_policy: OnPolicyConfig | None = None

    @model_validator(mode="after")
    def _source_needs_its_path(self) -> KDConfig:
        if self.source == "topk_file" and not self.topk_file:
            raise ValueError("kd.source is 'topk_file' but kd.topk_file is not set")
        if not self.tasks:
            raise ValueError("kd.tasks must name at least one of: label, rationale")
        if self.source == "server" and (self.server is None or self.on_policy is None):
            raise ValueError(
                "kd.source 'server' needs kd.server (base_url, model) and kd.on_policy (it scores the "
                "student's samples online; for off-policy KD precompute targets with `kd-targets`)"
            )
        if self.on_policy is not None and self.source == "topk_file":
            raise ValueError(
                "kd.on_policy: kd.source 'topk_file' holds targets precomputed on the data's outputs, "
                "which cannot score the student's new samples; use kd.source 'whitebox' or 'server'"
            )
        if self.on_policy is not None and self.label_distribution:
            raise ValueError(
                "kd.on_policy: kd.label_distribution compares whole-label distributions, not the "
                "student's sampled tokens; remove one of them"
            )
        return self

    def missing_teacher(self) -> str | None:
        """Why this section needs kd.teacher_model and lacks it (None when it is fine). Checked when
        a whole config loads (stepdistill/config.py): the term itself may be given a teacher object."""
        token_tasks = [t for t in self.tasks if not (t == "label" and self.label_distribution)]
        if self.teacher_model:
            return None
        if token_tasks and self.source == "whitebox":
            return "kd.teacher_model: required with kd.source 'whitebox' (or set kd.source: topk_file)"
        if self.label_distribution and self.label_distribution_from == "teacher":
            return (
                "kd.teacher_model: required with kd.label_distribution_from 'teacher' (or use 'annotations')"
            )
        return None

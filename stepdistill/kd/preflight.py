"""Checks before an expensive distillation run: will the teacher's probabilities mean anything to
the student, and will teacher + student fit in memory?

Token-level KD compares distributions over token ids, so teacher and student must agree on the
vocabulary (size, special tokens, the ids of any text) -- otherwise the loss trains the student
towards nonsense without any error. `preflight` collects every finding; errors raise a ConfigError
listing all of them at once, warnings are logged.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from stepdistill.errors import ConfigError

log = logging.getLogger(__name__)

PROBE = "Q: Tom has 3 apples and buys 2.5 more. How many? A: 3 + 2.5 = 5.5. So the answer is (b) café.\n"
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}
_SPECIAL = ("bos_token", "eos_token", "pad_token", "unk_token")


@dataclass(frozen=True)
class Finding:
    level: str  # "error" (KD would be wrong), "warning" (worth a look) or "info"
    check: str
    message: str


def _vocabularies(teacher_tok: Any, student_tok: Any) -> str:
    """Both vocabularies by name, so the user sees which tokenizers disagree."""

    def name(tok: Any) -> str:
        return getattr(tok, "name_or_path", "") or type(tok).__name__

    return (
        f"teacher vocabulary '{name(teacher_tok)}' ({len(teacher_tok)} tokens), "
        f"student vocabulary '{name(student_tok)}' ({len(student_tok)} tokens)"
    )


def check_tokenizers(teacher_tok: Any, student_tok: Any, probe: str = PROBE) -> list[Finding]:
    """Vocabulary size, special tokens, ids of a probe text and chat templates."""
    out: list[Finding] = []
    if len(teacher_tok) != len(student_tok):
        out.append(
            Finding(
                "error",
                "vocab",
                f"vocabulary sizes differ: teacher {len(teacher_tok)}, student {len(student_tok)} "
                f"({_vocabularies(teacher_tok, student_tok)}); cross-tokenizer distillation needs "
                "the two aligned first",
            )
        )
    for name in _SPECIAL:
        t, s = getattr(teacher_tok, name, None), getattr(student_tok, name, None)
        t_id, s_id = getattr(teacher_tok, name + "_id", None), getattr(student_tok, name + "_id", None)
        if (t, t_id) != (s, s_id):
            level = "error" if name == "eos_token" else "warning"
            out.append(
                Finding(
                    level, "special_tokens", f"{name}: teacher {t!r} (id {t_id}), student {s!r} (id {s_id})"
                )
            )
    t_ids = teacher_tok(probe, add_special_tokens=False)["input_ids"]
    s_ids = student_tok(probe, add_special_tokens=False)["input_ids"]
    if t_ids != s_ids:
        pos = next((i for i, (a, b) in enumerate(zip(t_ids, s_ids)) if a != b), min(len(t_ids), len(s_ids)))
        out.append(
            Finding(
                "error",
                "token_ids",
                f"the probe text tokenises differently from token {pos}: "
                f"teacher {t_ids[pos : pos + 3]}, student {s_ids[pos : pos + 3]} "
                f"({_vocabularies(teacher_tok, student_tok)})",
            )
        )
    t_tpl, s_tpl = getattr(teacher_tok, "chat_template", None), getattr(student_tok, "chat_template", None)
    if bool(t_tpl) != bool(s_tpl):
        which = "teacher" if t_tpl else "student"
        out.append(Finding("warning", "chat_template", f"only the {which} has a chat template"))
    elif t_tpl and t_tpl != s_tpl:
        out.append(Finding("warning", "chat_template", "teacher and student chat templates differ"))
    return out


def check_models(teacher: Any, student: Any) -> list[Finding]:
    """The output layers must have the same number of rows for dense logits to be comparable."""
    t_rows = teacher.get_output_embeddings().weight.shape[0]
    s_rows = student.get_output_embeddings().weight.shape[0]
    if t_rows != s_rows:
        return [
            Finding(
                "error", "vocab", f"output vocabularies differ: teacher {t_rows} logits, student {s_rows}"
            )
        ]
    return []


@dataclass(frozen=True)
class MemoryEstimate:
    """Rough bytes needed; activations are an order-of-magnitude estimate, not a measurement."""

    teacher_weights: int
    student_weights: int
    student_grads: int
    optimizer_state: int
    activations: int

    @property
    def total(self) -> int:
        return (
            self.teacher_weights
            + self.student_weights
            + self.student_grads
            + self.optimizer_state
            + self.activations
        )

    def describe(self) -> str:
        gib = 1024**3
        parts = ", ".join(
            f"{k.replace('_', ' ')} {getattr(self, k) / gib:.2f}"
            for k in ("teacher_weights", "student_weights", "student_grads", "optimizer_state", "activations")
        )
        return f"~{self.total / gib:.2f} GiB ({parts} GiB)"


def estimate_memory(
    teacher_params: int,
    student_params: int,
    batch_tokens: int,
    hidden: int,
    layers: int,
    vocab: int,
    teacher_dtype: str = "fp32",
    student_dtype: str = "fp32",
    trainable_params: int | None = None,
) -> MemoryEstimate:
    """params x bytes per dtype for both models; fp32 grads and AdamW's two fp32 moments for the
    trainable student params; activations ~ 16 values per token, hidden unit and layer for the
    student's backward pass plus fp32 logits (student + grad + teacher) per token."""
    trainable = student_params if trainable_params is None else trainable_params
    sb = BYTES[student_dtype]
    activations = batch_tokens * hidden * layers * 16 * sb + batch_tokens * vocab * 4 * 3
    return MemoryEstimate(
        teacher_weights=teacher_params * BYTES[teacher_dtype],
        student_weights=student_params * sb,
        student_grads=trainable * 4,
        optimizer_state=trainable * 8,
        activations=activations,
    )


def available_memory(device: str = "cpu") -> int:
    """Free accelerator memory, or total RAM on CPU."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@dataclass
class PreflightReport:
    findings: list[Finding] = field(default_factory=list)
    memory: MemoryEstimate | None = None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    def raise_for_errors(self) -> None:
        for f in self.findings:
            if f.level == "warning":
                log.warning("kd preflight: %s: %s", f.check, f.message)
        if self.errors:
            lines = "\n".join(f"  {f.check}: {f.message}" for f in self.errors)
            raise ConfigError(f"soft-target distillation cannot run with this teacher and student:\n{lines}")


def _n_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def preflight(
    teacher_tok: Any,
    student_tok: Any,
    teacher: Any = None,
    student: Any = None,
    batch_tokens: int = 4096,
    device: str = "cpu",
    available: int | None = None,
) -> PreflightReport:
    """All checks; with models given, also the memory estimate against what `device` has free."""
    report = PreflightReport(check_tokenizers(teacher_tok, student_tok))
    if teacher is None or student is None:
        return report
    report.findings += check_models(teacher, student)
    cfg = student.config
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model", 0)
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "num_layers", 0)
    trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
    dtype_name = {4: "fp32", 2: "bf16"}.get(next(teacher.parameters()).element_size(), "fp32")
    report.memory = estimate_memory(
        _n_params(teacher),
        _n_params(student),
        batch_tokens,
        hidden,
        layers,
        student.get_output_embeddings().weight.shape[0],
        teacher_dtype=dtype_name,
        trainable_params=trainable,
    )
    available = available_memory(device) if available is None else available
    if report.memory.total > available:
        report.findings.append(
            Finding(
                "error",
                "memory",
                f"teacher + student need {report.memory.describe()}, but {device} has {available / 1024**3:.2f} GiB; "
                "precompute top-k targets (kd.source: topk_file), use a smaller batch or a lower teacher_dtype",
            )
        )
    return report

"""Teacher label distributions for closed label sets, used as soft labels for the label task.

A label string is scored by a model as the sum of the log-probs of its tokens after the prompt;
normalising those scores over the candidate labels gives a distribution over labels. The teacher's
distribution is the soft target; the student's normalised scores are trained towards it by

    loss = - sum_c p_teacher(c) * log softmax_c(student_score(c))      (mean over examples)

so that, when the teacher gives "tiger" more mass than "napkin" for a lion, so does the student.
An API teacher without white-box access gives the distribution from the top log-probs at the answer
position instead (`api_label_distribution`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from stepdistill.errors import DataError
from stepdistill.training.batching import IGNORE


def candidate_batch(
    prompts: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]], kind: str, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows (prompt b, candidate c) in order b * C + c: (input_ids, attention_mask, labels).

    Causal: prompt + candidate in one row, labels only on the candidate; seq2seq: the prompt in the
    encoder, the candidate as decoder target. Token lists come from the caller (e.g. the trainer's
    encoders), so the scored text is exactly what the student trains on.
    """
    src, tgt = [], []
    for p in prompts:
        for c in candidates:
            if kind == "causal":
                src.append(list(p) + list(c))
                tgt.append([IGNORE] * len(p) + list(c))
            else:
                src.append(list(p))
                tgt.append(list(c))

    def pad(rows: list[list[int]], value: int) -> torch.Tensor:
        width = max(len(r) for r in rows)
        return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)

    return pad(src, pad_id), pad([[1] * len(r) for r in src], 0), pad(tgt, IGNORE)


def sequence_logprobs(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, kind: str
) -> torch.Tensor:
    """Sum of the log-probs of each row's target tokens, [rows]; keeps gradients (wrap the teacher
    call in torch.no_grad())."""
    if kind == "causal":
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
        labels = labels[:, 1:]
    else:
        decoder_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = model(
            input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_ids
        ).logits
    keep = labels != IGNORE
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    picked = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [rows, len]
    return (picked * keep).sum(-1)


def label_scores(
    model: Any, kind: str, prompts: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]], pad_id: int
) -> torch.Tensor:
    """Sum log-prob of every candidate after every prompt: [n_prompts, n_candidates]."""
    ids, mask, labels = candidate_batch(prompts, candidates, kind, pad_id)
    dev = next(model.parameters()).device
    scores = sequence_logprobs(model, ids.to(dev), mask.to(dev), labels.to(dev), kind)
    return scores.view(len(prompts), len(candidates))


def label_distribution(scores: torch.Tensor) -> torch.Tensor:
    """Normalise candidate scores (log-probs) over the candidates: [B, C] -> probabilities."""
    return torch.softmax(scores.float(), dim=-1)


def soft_label_loss(student_scores: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between the teacher's label distribution and the student's normalised scores."""
    logq = torch.log_softmax(student_scores.float(), dim=-1)
    return -(teacher_probs.detach().float() * logq).sum(-1).mean()


_OPENERS = set(" \t\n([{\"'*:")


def answer_position(
    entries: list[dict[str, Any]], answer_phrase: str, where: str = "<teacher_logprobs>"
) -> int:
    """Index of the first generated token of the answer: the first token after the last
    `answer_phrase` that is not just whitespace or an opening bracket/quote."""
    text = "".join(e["token"] for e in entries)
    at = text.rfind(answer_phrase)
    if at < 0:
        raise DataError(
            where, None, "teacher_logprobs", f"answer phrase {answer_phrase!r} not in the completion"
        )
    end, start = at + len(answer_phrase), 0
    for i, e in enumerate(entries):
        tok = e["token"]
        if start + len(tok) > end and not set(tok) <= _OPENERS:
            return i
        start += len(tok)
    raise DataError(where, None, "teacher_logprobs", f"no answer token after {answer_phrase!r}")


def api_label_distribution(entry: dict[str, Any], labels: Sequence[str]) -> list[float]:
    """Distribution over `labels` from one API token entry ({"token", "logprob", "top"}).

    A top alternative counts for every label that starts with it (case-insensitive, ignoring
    surrounding spaces and brackets); a token shared by several labels splits its probability
    equally. The mass outside the listed alternatives is shared equally by labels no listed token
    matched (the teacher said nothing about them). The result is normalised over labels.
    """
    probs: dict[str, float] = {}  # first occurrence wins (the chosen token is usually listed again)
    for tok, lp in [(entry["token"], entry["logprob"])] + [tuple(t) for t in entry.get("top") or []]:
        probs.setdefault(tok, math.exp(float(lp)))
    names = [lab.strip().lower() for lab in labels]
    mass = [0.0] * len(labels)
    for tok, p in probs.items():
        piece = tok.strip().strip("([{\"'*").lower()
        hits = [i for i, n in enumerate(names) if piece and n.startswith(piece)]
        for i in hits:
            mass[i] += p / len(hits)
    listed = sum(probs.values())
    unmatched = [i for i, m in enumerate(mass) if m == 0.0]
    for i in unmatched:
        mass[i] = max(0.0, 1.0 - listed) / len(unmatched)
    total = sum(mass)
    if total <= 0:
        raise ValueError(f"no probability left for any of the labels {list(labels)}")
    return [m / total for m in mass]


def label_kd_loss(
    student_scores: torch.Tensor,
    teacher_probs: torch.Tensor,
    loss: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
) -> torch.Tensor:
    """KD divergence between label distributions, [B, C] each; mean over rows, times T^2.

    Unlike `soft_label_loss` (a cross-entropy) it is 0 when the student matches the teacher, so its
    magnitude can be compared with the other KD terms; the gradient is the same for forward KL.
    """
    from stepdistill.kd.losses import divergence

    # A label the teacher gave no mass (API log-probs list only a few alternatives) would make the
    # reverse KL infinite; a floor far below any listed probability keeps it finite.
    probs = teacher_probs.detach().float().clamp_min(1e-8)
    logp = torch.log_softmax(probs.log() / temperature, dim=-1)
    logq = torch.log_softmax(student_scores.float() / temperature, dim=-1)
    per_row = divergence(logp, logq, loss, beta) * temperature**2
    return per_row.mean() if per_row.numel() else per_row.sum()

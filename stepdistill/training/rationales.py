"""Which teacher rationales an example trains on, and what each weighs (pure functions).

    train.rationales            one       the annotation's chosen rationale (teacher_rationale)
                                agreeing  every distinct parsed sample of teacher_samples whose label the
                                          task scores correct against the label being trained (gold,
                                          or the vote in the teacher-label setting)
                                all       every distinct parsed sample of teacher_samples
    train.rationale_order       shortest | as_sampled: the order the cap `max_rationales` cuts in
    train.max_rationales        keep at most this many per example (None: all)
    train.rationale_max_tokens  drop every rationale longer than this many student tokens
    train.rationale_weighting   example: each of an example's n rationale rows weighs 1/n, so its
                                rationale task weighs the same whatever n; rationale: each row 1

A sample is usable when it parsed (a label, a rationale, no parse error); duplicates are removed on
their normalised text (lower case, whitespace collapsed), the first sampled kept. With
`train.gold_filter` a sample is kept only when its own label agrees with gold. Annotations without
teacher_samples (annotate.samples: 1) give their one rationale under every setting.

The weights enter the loss as a weighted token mean (training/step.py): a row r of an example with
n_e rows has weight w_r (1/n_e or 1) and

    L_rationale = sum_r w_r * sum_t CE(r, t) / sum_r w_r * T_r       (T_r: target tokens of row r)

so with one rationale per example it is today's token mean, bit for bit, and under `example` an
example with n rationales weighs what one example with a rationale of their mean length weighs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stepdistill.errors import ConfigError
from stepdistill.schema import Annotation
from stepdistill.tasks.base import Task

# Rationales of one example are counted by the student's tokenizer (target tokens, no eos).
CountTokens = Callable[[str], int]


class RationaleFallback(UserWarning):
    """`train.rationales: agreeing|all` on annotations without teacher_samples."""


FALLBACK_MESSAGE = (
    "train.rationales: some annotations have no teacher_samples (annotated with annotate.samples: 1); "
    "those examples train on their one chosen rationale (metrics.json train.rationale_fallback counts them)"
)


def normalised(text: str) -> str:
    """The text two rationales are compared on when duplicates are removed."""
    return " ".join(text.lower().split())


def parsed_samples(ann: Annotation) -> list[dict[str, Any]]:
    """The samples of teacher_samples that parsed into a label and a non-empty rationale."""
    return [
        s
        for s in ann.teacher_samples or []
        if s.get("label") is not None
        and s.get("parse_error") is None
        and s.get("rationale") is not None
        and s["rationale"].strip()
    ]


@dataclass
class Choice:
    """The rationales one example trains on, and why it has none when `rationales` is empty."""

    rationales: list[str]
    why_none: str = ""
    fallback: bool = False  # no teacher_samples: the one chosen rationale stands in for them
    over_cap: int = 0  # rationales dropped by train.rationale_max_tokens


def _one(task: Task, ann: Annotation, gold_filter: bool) -> tuple[list[str], str]:
    """Today's single rationale: the annotation's chosen one."""
    if ann.teacher_rationale is None:
        return [], "no teacher rationale"
    if gold_filter and (ann.gold is None or not task.is_correct(ann.teacher_label, ann.gold)):
        return [], "rationale's teacher label disagrees with gold"
    return [ann.teacher_rationale.strip()], ""


def _sampled(task: Task, ann: Annotation, cfg: Any, label: str | None) -> tuple[list[str], str]:
    """Distinct parsed samples, filtered by agreement (train.rationales agreeing) and gold_filter."""
    samples = parsed_samples(ann)
    if not samples:
        return [], "no parsed teacher sample"
    if cfg.rationales == "agreeing":
        if label is None:
            return [], "no label for the rationales to agree with"
        samples = [s for s in samples if task.is_correct(s["label"], label)]
        if not samples:
            return [], "no sample agrees with the label"
    if cfg.gold_filter:
        samples = [s for s in samples if ann.gold is not None and task.is_correct(s["label"], ann.gold)]
        if not samples:
            return [], "rationale's teacher label disagrees with gold"
    seen: set[str] = set()
    out = []
    for s in samples:
        text = s["rationale"].strip()
        if normalised(text) not in seen:
            seen.add(normalised(text))
            out.append(text)
    return out, ""


def choose(
    task: Task, ann: Annotation, cfg: Any, label: str | None, count_tokens: CountTokens | None = None
) -> Choice:
    """The rationales `ann` trains on under cfg (a TrainConfig); `label` is the label being trained."""
    # An annotated example without samples (annotate.samples: 1) stands in with its one rationale;
    # a row with no teacher answer at all (e.g. an unannotated validation split) is no fallback.
    fallback = cfg.rationales != "one" and not ann.teacher_samples and ann.teacher_rationale is not None
    if cfg.rationales == "one" or fallback:
        found, why = _one(task, ann, cfg.gold_filter)
    else:
        found, why = _sampled(task, ann, cfg, label)
    if not found:
        return Choice([], why, fallback)
    lengths = {r: length(r, count_tokens) for r in found}
    if cfg.rationale_order == "shortest":
        found = sorted(found, key=lambda r: lengths[r])  # stable: equal lengths keep sample order
    over = 0
    if cfg.rationale_max_tokens is not None:
        kept = [r for r in found if lengths[r] <= cfg.rationale_max_tokens]
        over = len(found) - len(kept)
        found = kept
        if not found:
            return Choice([], f"every rationale over train.rationale_max_tokens={cfg.rationale_max_tokens}",
                          fallback, over)  # fmt: skip
    if cfg.max_rationales is not None:
        found = found[: cfg.max_rationales]
    return Choice(found, "", fallback, over)


def length(text: str, count_tokens: CountTokens | None) -> int:
    return count_tokens(text) if count_tokens is not None else len(text.split())


def row_weight(n_rows: int, weighting: str) -> float:
    """The loss weight of each of an example's n_rows rationale rows (train.rationale_weighting)."""
    return 1.0 / n_rows if weighting == "example" and n_rows > 1 else 1.0


def say_fallback_once() -> None:
    """One warning per process (the text never changes, so Python's filter shows it once)."""
    warnings.warn(FALLBACK_MESSAGE, RationaleFallback, stacklevel=2)


def token_counter(tokenizer: Any) -> CountTokens:
    """Rationale length in the student's target tokens (as training encodes them, without eos)."""
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def preflight(
    task: Task, annotations: list[Annotation], cfg: Any,
    label_of: Callable[[Annotation], str | None], load_tokenizer: Callable[[], Any],
) -> None:  # fmt: skip
    """The check of train.rationale_max_tokens, which needs the data, run before the student loads.
    `cfg` is the TrainConfig, `label_of` gives the label an example trains on; `load_tokenizer` is
    called only when the cap is set. (Keys that clash with other sections: config.py.)"""
    if cfg.rationale_max_tokens is None:
        return
    check_cap(task, annotations, cfg, label_of, token_counter(load_tokenizer()))


def check_cap(
    task: Task, annotations: list[Annotation], cfg: Any, label_of: Callable[[Annotation], str | None],
    count_tokens: CountTokens | None,
) -> None:  # fmt: skip
    """Refuse a train.rationale_max_tokens below the shortest rationale of every example (nothing
    would train the rationale task), with the numbers."""
    cap = cfg.rationale_max_tokens
    if cap is None:
        return
    uncapped = cfg.model_copy(update={"rationale_max_tokens": None, "max_rationales": None})
    shortest = []
    for ann in annotations:
        found = choose(task, ann, uncapped, label_of(ann), count_tokens).rationales
        if found:
            shortest.append(min(length(r, count_tokens) for r in found))
    if shortest and min(shortest) > cap:
        shortest.sort()
        raise ConfigError(
            f"train.rationale_max_tokens={cap} is below the shortest rationale of every example: the "
            f"shortest of all is {shortest[0]} tokens, the median example's shortest "
            f"{shortest[len(shortest) // 2]} ({len(shortest)} examples with a rationale); raise it or "
            "remove it"
        )


def quantiles(values: list[int | float]) -> dict[str, Any]:
    """n, median, p90 and max of a list (nearest-rank), for metrics.json."""
    if not values:
        return {"n": 0, "median": None, "p90": None, "max": None}
    s = sorted(values)

    def rank(q: float):
        return s[max(0, math.ceil(len(s) * q) - 1)]

    return {"n": len(s), "median": rank(0.5), "p90": rank(0.9), "max": s[-1]}

"""Turn annotated examples into (source, target) training pairs for each method, and give the
test-time source text. Pure functions: values in, values out.

    standard         "predict: <input>"                    -> gold label
    distill          "predict: <input>"                    -> teacher label
    step_by_step     "predict: <input>"                    -> label (gold or teacher)      task_id 0
                     "explain: <input>"                    -> teacher rationale            task_id 1
    single_task      "<input>"                             -> "<rationale> So the answer is <label>"
    answer_first     "<input>"                             -> "<label>\n<rationale>"  (test: label, stop)
    rationale_input  "<input>\\nRationale: <rationale>"     -> label

Rows a method cannot use (no gold for `standard`, no parsed teacher label for `distill`, ...) are
skipped and counted by reason, so a run reports how much data it really trained on.

step_by_step uses every label it has: the label task trains on every example with a label, the
rationale task on every example with a usable rationale (parsed, and with `train.gold_filter`
agreeing with gold). An example missing one of the two still trains the other, so step-by-step with
gold labels is always standard fine-tuning on the same examples *plus* a rationale task.

An example may have several rationales (train.rationales: agreeing|all, training/rationales.py):
each gives a rationale row (single_task, answer_first, rationale_input: a row of the one task),
weighted by train.rationale_weighting, all of them in the example's step.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from stepdistill.schema import FIXED_LABELS, Annotation, label_source
from stepdistill.tasks.base import Task
from stepdistill.training import rationales as rats
from stepdistill.training.config import TrainConfig

LABEL_TASK = 0
RATIONALE_TASK = 1
TASK_IDS = {"label": LABEL_TASK, "rationale": RATIONALE_TASK}  # kd.tasks names -> task ids
RATIONALE_INPUT_SEP = "\nRationale: "
# answer_first: the label ends at the first newline (labels never hold one), the rationale follows;
# at test time generation stops there, so the label costs no rationale tokens.
ANSWER_FIRST_SEP = "\n"


@dataclass(frozen=True)
class Pair:
    """One training sequence: the student reads `source` and learns to emit `target`."""

    source: str
    target: str
    task_id: int  # LABEL_TASK or RATIONALE_TASK: which loss term its tokens feed
    weight: float = 1.0  # the row's loss weight (1/n for each of n rationales under example weighting)


@dataclass
class Formatted:
    """Training pairs grouped per example (a step_by_step example yields two pairs)."""

    examples: list[list[Pair]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> count (whole example or one task)
    rows_in: int = 0  # annotations offered
    per_example: Counter = field(default_factory=Counter)  # rationales trained on -> examples
    rationale_lengths: list[int] = field(default_factory=list)  # tokens (words without a tokenizer)
    fallback: int = 0  # examples without teacher_samples under rationales agreeing|all
    over_cap: int = 0  # rationales dropped by train.rationale_max_tokens
    agreement: list[float] = field(default_factory=list)  # vote agreement of the examples trained on

    @property
    def n_pairs(self) -> int:
        return sum(len(e) for e in self.examples)

    def n_task_examples(self, task_id: int) -> int:
        """Examples with a pair of this task (LABEL_TASK or RATIONALE_TASK)."""
        return sum(any(p.task_id == task_id for p in e) for e in self.examples)

    def counts(self) -> dict:
        """What metrics.json records about the training data: examples per task and skip reasons."""
        return {
            "label_examples": self.n_task_examples(LABEL_TASK),
            "rationale_examples": self.n_task_examples(RATIONALE_TASK),
            "skipped": dict(self.skipped),
            **self.rationale_counts(),
        }

    def rationale_counts(self) -> dict:
        """What was trained on of the teacher's rationales (metrics.json train.*; the report reads them)."""
        n = self.rows_in
        agreement = sorted(self.agreement)
        return {
            "train_rows": self.rows_in,
            # annotations offered with 0, 1, 2, ... rationales trained on (rationale methods only)
            "rationales_per_example": {str(k): v for k, v in sorted(self.per_example.items())},
            "rationale_rows": sum(k * v for k, v in self.per_example.items()),
            "rationale_share": (
                round(sum(v for k, v in self.per_example.items() if k) / n, 6)
                if n and self.per_example
                else None
            ),
            "rationale_tokens": rats.quantiles(self.rationale_lengths),
            "rationale_fallback": self.fallback,
            "rationales_over_max_tokens": self.over_cap,
            "vote_agreement": round(sum(agreement) / len(agreement), 6) if agreement else None,
        }


# standard always learns the gold labels and distill the teacher's, whatever train.label_source says
def trained_label(ann: Annotation, cfg: TrainConfig) -> tuple[str | None, str]:
    """The label the student is trained on, and the skip reason when it is missing."""
    if label_source(cfg.method, cfg.label_source) == "gold":
        return ann.gold, "no gold label"
    return ann.teacher_label, "no parsed teacher label"


def single_task_target(task: Task, rationale: str, label: str) -> str:
    return f"{rationale.strip()} {task.answer_phrase} {task.format_target(label)}"


def _rationale_rows(choice: rats.Choice, cfg: TrainConfig) -> list[tuple[str, float]]:
    """(rationale, row weight) of each rationale an example trains on."""
    weight = rats.row_weight(len(choice.rationales), cfg.rationale_weighting)
    return [(r, weight) for r in choice.rationales]


def step_by_step_pairs(
    task: Task, ann: Annotation, cfg: TrainConfig, count_tokens: rats.CountTokens | None = None
) -> tuple[list[Pair], list[str], rats.Choice]:
    """Label pair when there is a label, a rationale pair per usable rationale; the reasons name
    each task the example does not train ("label task: ...", "rationale task: ...")."""
    label, no_label = trained_label(ann, cfg)
    choice = rats.choose(task, ann, cfg, label, count_tokens)
    text = task.format_input(ann.fields)
    pairs, reasons = [], []
    if label is not None:
        pairs.append(Pair(cfg.label_prefix + text, task.format_target(label), LABEL_TASK))
    else:
        reasons.append(f"label task: {no_label}")
    for rationale, weight in _rationale_rows(choice, cfg):
        pairs.append(Pair(cfg.rationale_prefix + text, rationale, RATIONALE_TASK, weight))
    if not choice.rationales:
        reasons.append(f"rationale task: {choice.why_none}")
    return pairs, reasons, choice


def pairs_for(
    task: Task, ann: Annotation, cfg: TrainConfig, count_tokens: rats.CountTokens | None = None
) -> tuple[list[Pair], str | None, rats.Choice | None]:
    """The training pairs of one example under cfg.method, or ([], reason) when it is unusable, and
    the rationales chosen (None for the label-only methods). (step_by_step, which can train one
    task of an example without the other: `step_by_step_pairs`.)"""
    if cfg.method == "step_by_step":
        pairs, reasons, choice = step_by_step_pairs(task, ann, cfg, count_tokens)
        return pairs, (None if pairs else "; ".join(reasons)), choice
    label, missing = trained_label(ann, cfg)
    if label is None:
        return [], missing, None
    text = task.format_input(ann.fields)
    target = task.format_target(label)
    method = cfg.method
    if method in ("standard", "distill"):
        return [Pair(cfg.label_prefix + text, target, LABEL_TASK)], None, None
    choice = rats.choose(task, ann, cfg, label, count_tokens)
    if not choice.rationales:
        return [], choice.why_none, choice
    rows = _rationale_rows(choice, cfg)
    if method == "single_task":
        return [Pair(text, single_task_target(task, r, label), LABEL_TASK, w) for r, w in rows], None, choice
    if method == "answer_first":
        return [Pair(text, target + ANSWER_FIRST_SEP + r, LABEL_TASK, w) for r, w in rows], None, choice
    if method == "rationale_input":
        return [Pair(text + RATIONALE_INPUT_SEP + r, target, LABEL_TASK, w) for r, w in rows], None, choice
    raise ValueError(f"unknown training method '{method}'")


def build_pairs(
    task: Task, annotations: list[Annotation], cfg: TrainConfig, count_tokens: rats.CountTokens | None = None
) -> Formatted:
    """Training pairs for every usable example; unusable ones are counted in `skipped`.
    `count_tokens` (the student's tokenizer) measures rationales for train.rationale_max_tokens,
    train.rationale_order and metrics.json; without it they are measured in words."""
    out = Formatted(rows_in=len(annotations))
    for ann in annotations:
        if cfg.method == "step_by_step":
            pairs, reasons, choice = step_by_step_pairs(task, ann, cfg, count_tokens)
            out.skipped.update(reasons)
        else:
            pairs, reason, choice = pairs_for(task, ann, cfg, count_tokens)
            if reason is not None:
                out.skipped[reason] += 1
        if choice is not None:
            out.fallback += choice.fallback
            out.over_cap += choice.over_cap
        if cfg.method not in FIXED_LABELS:  # the methods that train on rationales
            trained = choice.rationales if choice is not None and pairs else []
            out.per_example[len(trained)] += 1
            out.rationale_lengths += [rats.length(r, count_tokens) for r in trained]
        if not pairs:
            continue
        out.examples.append(pairs)
        out.ids.append(ann.id)
        if "agreement" in ann.extra:
            out.agreement.append(ann.extra["agreement"])
    if out.fallback and cfg.rationales != "one":
        rats.say_fallback_once()
    return out


def eval_source(task: Task, ann: Annotation, cfg: TrainConfig) -> str:
    """The text the student reads at test time to predict a label (no rationale is generated
    for step_by_step: the label prefix alone)."""
    text = task.format_input(ann.fields)
    if cfg.method in ("standard", "distill", "step_by_step"):
        return cfg.label_prefix + text
    if cfg.method == "rationale_input":
        # The rationale is an input here, so evaluation needs teacher rationales on that split too;
        # without one the student sees an empty rationale.
        return text + RATIONALE_INPUT_SEP + (ann.teacher_rationale or "").strip()
    return text


def rationale_source(task: Task, ann: Annotation, cfg: TrainConfig) -> str:
    """The text that asks a step_by_step student for a rationale."""
    return cfg.rationale_prefix + task.format_input(ann.fields)


def split_answer_first(text: str) -> tuple[str | None, str | None]:
    """(label, rationale) from an answer_first generation: the label is its first line."""
    label, _, rationale = text.strip().partition(ANSWER_FIRST_SEP)
    return label.strip() or None, rationale.strip() or None


def split_single_task(task: Task, text: str) -> tuple[str | None, str | None]:
    """(rationale, label) from a single_task generation: the label follows the last answer phrase."""
    head, sep, tail = text.rpartition(task.answer_phrase)
    if not sep:
        return text.strip() or None, None
    label = tail.strip()
    if label.endswith("."):
        label = label[:-1].rstrip()
    return head.strip(), label or None

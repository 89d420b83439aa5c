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
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from stepdistill.schema import Annotation, label_source
from stepdistill.tasks.base import Task
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


@dataclass
class Formatted:
    """Training pairs grouped per example (a step_by_step example yields two pairs)."""

    examples: list[list[Pair]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> count (whole example or one task)

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
        }


# standard always learns the gold labels and distill the teacher's, whatever train.label_source says
def _label(ann: Annotation, cfg: TrainConfig) -> tuple[str | None, str]:
    """The label the student is trained on, and the skip reason when it is missing."""
    if label_source(cfg.method, cfg.label_source) == "gold":
        return ann.gold, "no gold label"
    return ann.teacher_label, "no parsed teacher label"


def single_task_target(task: Task, rationale: str, label: str) -> str:
    return f"{rationale.strip()} {task.answer_phrase} {task.format_target(label)}"


def usable_rationale(task: Task, ann: Annotation, cfg: TrainConfig) -> tuple[str | None, str]:
    """The teacher rationale a method may train on, or (None, why not)."""
    if ann.teacher_rationale is None:
        return None, "no teacher rationale"
    if cfg.gold_filter and (ann.gold is None or not task.is_correct(ann.teacher_label, ann.gold)):
        return None, "rationale's teacher label disagrees with gold"
    return ann.teacher_rationale.strip(), ""


def step_by_step_pairs(task: Task, ann: Annotation, cfg: TrainConfig) -> tuple[list[Pair], list[str]]:
    """Label pair when there is a label, rationale pair when there is a usable rationale; the
    reasons name each task the example does not train ("label task: ...", "rationale task: ...")."""
    label, no_label = _label(ann, cfg)
    rationale, no_rationale = usable_rationale(task, ann, cfg)
    text = task.format_input(ann.fields)
    pairs, reasons = [], []
    if label is not None:
        pairs.append(Pair(cfg.label_prefix + text, task.format_target(label), LABEL_TASK))
    else:
        reasons.append(f"label task: {no_label}")
    if rationale is not None:
        pairs.append(Pair(cfg.rationale_prefix + text, rationale, RATIONALE_TASK))
    else:
        reasons.append(f"rationale task: {no_rationale}")
    return pairs, reasons


def pairs_for(task: Task, ann: Annotation, cfg: TrainConfig) -> tuple[list[Pair], str | None]:
    """The training pairs of one example under cfg.method, or ([], reason) when it is unusable.
    (step_by_step, which can train one task of an example without the other: `step_by_step_pairs`.)"""
    if cfg.method == "step_by_step":
        pairs, reasons = step_by_step_pairs(task, ann, cfg)
        return pairs, (None if pairs else "; ".join(reasons))
    label, missing = _label(ann, cfg)
    if label is None:
        return [], missing
    text = task.format_input(ann.fields)
    target = task.format_target(label)
    method = cfg.method
    if method in ("standard", "distill"):
        return [Pair(cfg.label_prefix + text, target, LABEL_TASK)], None
    rationale, why_not = usable_rationale(task, ann, cfg)
    if rationale is None:
        return [], why_not
    if method == "single_task":
        return [Pair(text, single_task_target(task, rationale, label), LABEL_TASK)], None
    if method == "answer_first":
        return [Pair(text, target + ANSWER_FIRST_SEP + rationale.strip(), LABEL_TASK)], None
    if method == "rationale_input":
        return [Pair(text + RATIONALE_INPUT_SEP + rationale, target, LABEL_TASK)], None
    raise ValueError(f"unknown training method '{method}'")


def build_pairs(task: Task, annotations: list[Annotation], cfg: TrainConfig) -> Formatted:
    """Training pairs for every usable example; unusable ones are counted in `skipped`."""
    out = Formatted()
    for ann in annotations:
        if cfg.method == "step_by_step":
            pairs, reasons = step_by_step_pairs(task, ann, cfg)
            out.skipped.update(reasons)
            if not pairs:
                continue
        else:
            pairs, reason = pairs_for(task, ann, cfg)
            if reason is not None:
                out.skipped[reason] += 1
                continue
        out.examples.append(pairs)
        out.ids.append(ann.id)
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

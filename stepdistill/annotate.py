"""Teacher x dataset -> annotated JSONL, resumable, with a bill.

    stepdistill annotate configs/demo.yaml [--teacher.concurrency 16 ...]

For each split: build a few-shot prompt per example, look every request up in the SQLite cache, send
only the missing ones (each answer committed as it arrives), parse the answers with the task's parser,
vote when several samples were asked for, optionally drop rationales that disagree with gold, and
write <run_dir>/annotations/<split>.jsonl atomically. Re-running the same command sends nothing that
was already answered, so the JSONL can always be rebuilt from the cache. A summary of requests,
failures, tokens, cost, speed and teacher accuracy goes to <run_dir>/annotations/summary.json.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stepdistill import runlock
from stepdistill.data.io import write_annotations, write_json
from stepdistill.errors import ConfigError, StepDistillError, TeacherError
from stepdistill.schema import Annotation
from stepdistill.tasks.base import Task
from stepdistill.teachers.base import Completion, Job, Sampling, Teacher
from stepdistill.teachers.cache import ResponseCache, request_key, teacher_identity
from stepdistill.teachers.config import AnnotateConfig, TeacherConfig
from stepdistill.teachers.parse_health import ParseHealth
from stepdistill.teachers.prompting import build_prompt, load_prompt_spec
from stepdistill.teachers.registry import LazyTeacher


@dataclass
class RunStats:
    """What the requests of one split cost; filled while answers arrive."""

    requests: int = 0
    retries: int = 0
    failures: Counter = field(default_factory=Counter)  # requests that finally failed, by kind
    failed_attempts: Counter = field(default_factory=Counter)  # every failed attempt, retried or not
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, comp: Completion) -> None:
        self.requests += 1
        self.retries += comp.retries
        self.failed_attempts.update(comp.failed_attempts)
        if comp.ok:
            self.prompt_tokens += comp.prompt_tokens
            self.completion_tokens += comp.completion_tokens
        else:
            self.failures[comp.error] += 1


def make_sampling(
    teacher_cfg: TeacherConfig, annotate_cfg: AnnotateConfig, stop: tuple[str, ...]
) -> Sampling:
    """Greedy for one sample; `sample_temperature` for self-consistency (greedy samples would agree)."""
    temperature = teacher_cfg.temperature if annotate_cfg.samples == 1 else annotate_cfg.sample_temperature
    return Sampling(
        max_tokens=teacher_cfg.max_tokens,
        temperature=temperature,
        top_p=teacher_cfg.top_p,
        stop=stop,
        seed=teacher_cfg.seed,
        top_logprobs=teacher_cfg.top_logprobs,
    )


def cost_usd(cfg: TeacherConfig, prompt_tokens: int, completion_tokens: int) -> float | None:
    if cfg.price_input_per_mtok is None and cfg.price_output_per_mtok is None:
        return None
    cost = prompt_tokens * (cfg.price_input_per_mtok or 0.0) + completion_tokens * (
        cfg.price_output_per_mtok or 0.0
    )
    return round(cost / 1e6, 6)


def _sample_record(task: Task, comp: Completion) -> dict[str, Any]:
    parsed = task.parse_completion(comp.text or "")
    return {
        "raw": comp.text,
        "label": parsed.label,
        "rationale": parsed.rationale,
        "parse_error": parsed.error,
    }


def combine(task: Task, ann: Annotation, comps: list[Completion], teacher_model: str) -> Annotation:
    """Fill the teacher keys of `ann` from its completions (pure). One sample: its parse. Several:
    majority vote over the parsed labels (ties go to the label seen first), the rationale of the
    first sample that agrees, every sample in teacher_samples. A failed request leaves the example
    unannotated with extra["teacher_error"], so that a re-run asks again."""
    out = Annotation.from_example(ann.example)
    out.teacher_model = teacher_model
    failed = [c for c in comps if not c.ok]
    if failed:
        out.extra["teacher_error"] = failed[0].error
        return out
    samples = [_sample_record(task, c) for c in comps]
    if len(comps) > 1:
        out.teacher_samples = samples
    if comps[0].logprobs is not None:
        out.teacher_logprobs = comps[0].logprobs
    out.teacher_raw = samples[0]["raw"]
    chosen, votes = vote(task, samples)
    if chosen is None:
        out.parse_error = samples[0]["parse_error"] or "no label found"
        return out
    out.teacher_label, out.teacher_rationale = chosen["label"], chosen["rationale"]
    if len(comps) > 1:
        out.teacher_raw = chosen["raw"]
        out.extra["agreement"] = votes / len(comps)
    return out


def vote(task: Task, samples: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, int]:
    """The majority vote over the parsed labels of `samples` (ties go to the label seen first): the
    first sample with the winning label and the winner's number of votes; (None, 0) when none parsed."""
    parsed = [s for s in samples if s["label"] is not None and s["parse_error"] is None]
    if not parsed:
        return None, 0
    votes = Counter(task.normalize(s["label"]) for s in parsed)
    winner = max(votes, key=votes.__getitem__)  # max keeps the first of equals: ties go to the first seen
    return next(s for s in parsed if task.normalize(s["label"]) == winner), votes[winner]


def vote_by_k(task: Task, annotations: list[Annotation]) -> dict[str, dict[str, Any]] | None:
    """Teacher label quality against the number of samples, from one annotation with k samples: for
    j = 1, 2, 4, ... k, the vote of each example's first j samples scored against gold (accuracy)
    and the share of examples with at least one correct sample among them (any_correct: how many
    examples the gold-label setting can give a correct rationale). None without samples or gold."""
    rows = [a for a in annotations if a.teacher_samples and a.gold is not None]
    if not rows:
        return None
    k = max(len(a.teacher_samples) for a in rows)
    ks = sorted({j for j in (2**i for i in range(k.bit_length())) if j <= k} | {k})
    out = {}
    for j in ks:
        voted = [vote(task, a.teacher_samples[:j])[0] for a in rows]
        right = sum(c is not None and task.is_correct(c["label"], a.gold) for c, a in zip(voted, rows))
        reach = sum(
            any(
                s["parse_error"] is None and task.is_correct(s["label"], a.gold)
                for s in a.teacher_samples[:j]
            )
            for a in rows
        )
        out[str(j)] = {"accuracy": round(right / len(rows), 6), "any_correct": round(reach / len(rows), 6),
                       "n": len(rows)}  # fmt: skip
    return out


def apply_gold_filter(task: Task, ann: Annotation) -> bool:
    """Drop the label and rationale of a teacher answer that disagrees with gold; True if dropped."""
    if ann.teacher_label is None or ann.gold is None or task.is_correct(ann.teacher_label, ann.gold):
        return False
    ann.extra["filtered"] = f"teacher label '{ann.teacher_label}' does not match gold '{ann.gold}'"
    ann.teacher_label = ann.teacher_rationale = None
    return True


async def _fetch(
    teacher: Teacher,
    jobs: list[Job],
    sampling: Sampling,
    cache: ResponseCache,
    stats: RunStats,
    progress: bool,
    desc: str,
    health: ParseHealth | None = None,
) -> dict[str, Completion]:
    from tqdm import tqdm

    got: dict[str, Completion] = {}
    with tqdm(total=len(jobs), desc=desc, unit="req", disable=not progress) as bar:
        async for job, comp in teacher.stream(jobs, sampling):
            if comp.ok:
                cache.put(job.key, teacher.identity, job.example_id, job.sample, comp)
            stats.add(comp)
            got[job.key] = comp
            if comp.ok and health is not None:
                health.add(comp.text)  # stops the run when the first answers do not parse
            bar.update(1)
    return got


def annotate(
    task: Task,
    annotations: list[Annotation],
    teacher_cfg: TeacherConfig,
    annotate_cfg: AnnotateConfig,
    cache_path: str | Path,
    out_path: str | Path,
    *,
    teacher: Teacher | LazyTeacher | None = None,
    split: str = "train",
    health: ParseHealth | None = None,
    require_answer: bool = True,
) -> tuple[list[Annotation], dict[str, Any]]:
    """Annotate one split; returns the annotations (also written to out_path) and its summary.

    `health` judges the first answers (teachers/parse_health.py); pass one to share it between the
    splits of a run, which then calls its finish(); by default each call judges its own split.
    `require_answer`: a split the teacher answered not once is an error and nothing is written (a
    run whose earlier splits got answers passes False: its unanswered rows are counted instead)."""
    start = time.perf_counter()
    if annotate_cfg.samples > 1 and teacher_cfg.backend == "precomputed":
        raise ConfigError("annotate.samples: a precomputed teacher has one completion per example; use 1")
    spec = load_prompt_spec(task, teacher_cfg)
    sampling = make_sampling(teacher_cfg, annotate_cfg, spec.stop)
    identity = teacher_identity(teacher_cfg)
    n = annotate_cfg.samples
    keys: list[list[str]] = []
    jobs: dict[str, Job] = {}  # identical prompts are asked once
    for ann in annotations:
        prompt = build_prompt(spec, task, ann.fields)
        row = [request_key(teacher_cfg, prompt, sampling, s, ann.id) for s in range(n)]
        for s, key in enumerate(row):
            jobs.setdefault(key, Job(key, ann.id, s, prompt))
        keys.append(row)
    stats = RunStats()
    lazy = teacher if isinstance(teacher, LazyTeacher) else None
    own_health = health is None
    health = health or ParseHealth(task, annotate_cfg, split, teacher_cfg.exemplars)
    health.split = split
    with ResponseCache(cache_path) as cache:
        results = cache.get_many(jobs)
        hits = len(results)
        for key in jobs:  # answers from earlier runs are judged first, before anything is sent
            if key in results:
                health.add(results[key].text)
        missing = [job for key, job in jobs.items() if key not in results]
        if missing:
            live = lazy.get() if lazy else teacher or LazyTeacher(teacher_cfg).get()
            served_key = f"served_model:{identity}"  # answers of an earlier run fix the served model
            if hasattr(live, "served_model") and live.served_model is None:
                live.served_model = cache.get_meta(served_key)
            desc = f"annotate {split}"
            coro = _fetch(live, missing, sampling, cache, stats, annotate_cfg.progress, desc, health)
            try:
                results.update(asyncio.run(coro))
                if getattr(live, "served_model", None):
                    cache.set_meta(served_key, live.served_model)
            finally:
                if teacher is None:
                    live.close()
    if own_health:
        health.finish()
    if require_answer:
        _require_an_answer(results, split)
    out = [combine(task, ann, [results[k] for k in row], identity) for ann, row in zip(annotations, keys)]
    summary = _summarize(task, out, teacher_cfg, annotate_cfg, split, stats, hits)
    if n > 1:
        summary["vote_by_k"] = vote_by_k(task, out)  # before gold filtering, which drops labels
    if annotate_cfg.gold_filter and split in annotate_cfg.gold_filter_splits:
        summary["filtered"] = sum(apply_gold_filter(task, ann) for ann in out)
    write_annotations(out_path, out)
    _add_speed(summary, time.perf_counter() - start)
    return out, summary


def _require_an_answer(results: dict[str, Completion], split: str) -> None:
    """Nothing is written for a split the teacher answered not once (e.g. the server went away)."""
    if results and not any(c.ok for c in results.values()):
        kinds = Counter(c.error for c in results.values())
        detail = next((c.detail for c in results.values() if c.detail), None)
        raise TeacherError(
            f"the teacher answered none of the {len(results)} requests of split '{split}' "
            f"({', '.join(f'{k}: {v}' for k, v in kinds.items())})"
            + (f"; last message: {detail}" if detail else "")
            + "; nothing was written for it, re-run when the teacher is reachable"
        )


def _summarize(
    task: Task,
    out: list[Annotation],
    cfg: TeacherConfig,
    annotate_cfg: AnnotateConfig,
    split: str,
    stats: RunStats,
    hits: int,
) -> dict[str, Any]:
    answered = [a for a in out if "teacher_error" not in a.extra]
    scored = [a for a in answered if a.gold is not None]
    correct = sum(task.is_correct(a.teacher_label, a.gold) for a in scored)
    return {
        "split": split,
        "teacher_model": teacher_identity(cfg),
        "examples": len(out),
        "annotated": sum(a.teacher_label is not None for a in out),
        "samples_per_example": annotate_cfg.samples,
        "requests": stats.requests,
        "cache_hits": hits,
        "retries": stats.retries,
        "failures": dict(stats.failures),
        "failed_attempts": dict(stats.failed_attempts),
        "unanswered": len(out) - len(answered),
        "parse_failures": sum(a.parse_error is not None for a in answered),
        "filtered": 0,
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "cost_usd": cost_usd(cfg, stats.prompt_tokens, stats.completion_tokens),
        "teacher_accuracy": round(correct / len(scored), 6) if scored else None,
        "teacher_correct": correct,
        "teacher_n": len(scored),
    }


def _add_speed(summary: dict[str, Any], wall_s: float) -> None:
    """Speed of the requests actually sent (cache hits cost nothing and would flatter the rate)."""
    summary["wall_s"] = round(wall_s, 3)
    summary["requests_per_s"] = round(summary["requests"] / wall_s, 3) if wall_s > 0 else None
    summary["tokens_per_s"] = round(summary["completion_tokens"] / wall_s, 3) if wall_s > 0 else None


_SUMMED = ("examples", "annotated", "requests", "cache_hits", "retries", "unanswered", "parse_failures")
_SUMMED += ("filtered", "prompt_tokens", "completion_tokens", "teacher_correct", "teacher_n", "wall_s")


def total_summary(per_split: dict[str, dict[str, Any]], cfg: TeacherConfig) -> dict[str, Any]:
    """Totals over splits: sums, merged failure counts, accuracy and speed recomputed from the sums."""
    total: dict[str, Any] = {"teacher_model": teacher_identity(cfg)}
    for key in _SUMMED:
        total[key] = sum(s[key] for s in per_split.values())
    for key in ("failures", "failed_attempts"):
        merged: Counter = Counter()
        for s in per_split.values():
            merged.update(s.get(key, {}))
        total[key] = dict(merged)
    total["cost_usd"] = cost_usd(cfg, total["prompt_tokens"], total["completion_tokens"])
    n = total["teacher_n"]
    total["teacher_accuracy"] = round(total["teacher_correct"] / n, 6) if n else None
    wall = total.pop("wall_s")
    _add_speed(total, wall)
    return total


def format_summary(summary: dict[str, Any]) -> str:
    """A short table for the terminal."""
    cols = ["examples", "annotated", "requests", "cache_hits", "retries", "parse_failures", "filtered"]
    cols += ["completion_tokens", "cost_usd", "teacher_accuracy", "requests_per_s"]
    rows = [("split", *cols)]
    for name, s in [*summary["splits"].items(), ("total", summary["total"])]:
        rows.append((name, *("-" if s.get(c) is None else str(s[c]) for c in cols)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in rows]
    failures = summary["total"]["failures"]
    if failures:
        lines.append(
            "failed requests (re-run to retry them): " + ", ".join(f"{k}={v}" for k, v in failures.items())
        )
    attempts = summary["total"].get("failed_attempts")
    if attempts:
        lines.append(
            "failed attempts, retries included: " + ", ".join(f"{k}={v}" for k, v in attempts.items())
        )
    return "\n".join(lines)


class IncompleteAnnotation(StepDistillError):
    """Some examples have no teacher answer; the answers that came are cached and a re-run asks only
    for the rest. Exit code 3."""

    exit_code = 3


def check_complete(summary: dict[str, Any], allow_incomplete: bool) -> None:
    """Raise IncompleteAnnotation when examples are left unanswered, unless allowed."""
    total = summary["total"]
    missing = total["unanswered"]
    if not missing or allow_incomplete:
        return
    kinds = ", ".join(f"{k}={v}" for k, v in total["failures"].items())
    raise IncompleteAnnotation(
        f"{missing} of {total['examples']} examples have no teacher answer ({kinds}); every answer "
        "received is cached: re-run the same command to ask only for the missing ones "
        "(or set annotate.allow_incomplete: true to go on without them)"
    )


def annotate_from_config(cfg: Any) -> dict[str, Any]:
    """The `stepdistill annotate` command: annotate cfg.annotate.splits into cfg.run_dir/annotations.

    The whole training set is annotated (train_fraction subsamples the annotated file later), and
    validation rows carved from train are written too (runfiles.py), so `train` reads them.
    """
    from stepdistill.data.splits import load_splits
    from stepdistill.tasks import get_task

    if cfg.teacher is None:
        raise ConfigError("teacher: the annotate command needs a teacher section (backend, model, ...)")
    task = get_task(cfg.task)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"train_fraction": 1.0})})
    splits = load_splits(cfg.data, task)
    unknown = [s for s in cfg.annotate.splits if s not in ("train", "valid", "test")]
    if unknown:
        raise ConfigError(f"annotate.splits: unknown split(s) {unknown}; allowed: train, valid, test")
    with runlock.hold(cfg.run_dir, "annotate"):
        summary = _annotate_splits(cfg, task, splits)
    check_complete(summary, cfg.annotate.allow_incomplete)
    return summary


def _annotate_splits(cfg: Any, task: Task, splits: dict[str, list[Annotation]]) -> dict[str, Any]:
    from stepdistill.runfiles import keep_carved_valid

    out_dir = Path(cfg.run_dir) / "annotations"
    fresh = not out_dir.exists()
    # The outermost folder this command creates: removed again if the teacher answered nothing.
    created = next((p for p in reversed([out_dir, *out_dir.parents]) if not p.exists()), None)
    teacher = LazyTeacher(cfg.teacher)
    # The first answers of the run are judged, whichever split they belong to.
    health = ParseHealth(task, cfg.annotate, "train", cfg.teacher.exemplars)
    per_split: dict[str, dict[str, Any]] = {}
    try:
        if fresh:
            teacher.get()  # nothing cached to reuse: check the teacher before anything is written
        for split in cfg.annotate.splits:
            if not splits.get(split):
                continue  # e.g. no test file configured
            _, per_split[split] = annotate(
                task,
                splits[split],
                cfg.teacher,
                cfg.annotate,
                out_dir / "cache.sqlite",
                out_dir / f"{split}.jsonl",
                teacher=teacher,
                split=split,
                health=health,
                require_answer=not per_split,  # once a split got answers, failures are counted
            )
        health.finish()  # a run with fewer answers than annotate.parse_check is judged on them all
    except TeacherError:
        if created is not None and not per_split:
            _discard_unanswered(out_dir, created)
        raise
    finally:
        teacher.close()
    keep_carved_valid(cfg, splits, out_dir)
    summary = {"splits": per_split, "total": total_summary(per_split, cfg.teacher)}
    write_json(out_dir / "summary.json", summary)
    print(format_summary(summary))
    return summary


def _discard_unanswered(out_dir: Path, created: Path) -> None:
    """Remove the folders this run created when its cache holds no answer: nothing to keep."""
    cache = out_dir / "cache.sqlite"
    if cache.exists():
        with ResponseCache(cache) as rc:
            if len(rc):
                return
    shutil.rmtree(created, ignore_errors=True)

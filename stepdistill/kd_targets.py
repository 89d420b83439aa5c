"""`stepdistill kd-targets CONFIG`: precompute teacher targets once, train many students on them.

    stepdistill kd-targets configs/my.yaml                       # white-box teacher from kd:
    stepdistill kd-targets configs/my.yaml --from annotations    # API teacher_logprobs in the data

It builds exactly the training pairs `stepdistill train` would build from the same config (task,
data, train.method, the student's tokenizer), so the stored rows line up with the student's target
tokens, and writes one top-k file (kd/topk.py) to `--out`, else kd.topk_file, else
`<train file stem>.topk.safetensors` next to the training annotations. Train with
`kd.source: topk_file` and `kd.topk_file` pointing at it.

From annotations, each example's API log-probs are mapped to the student's ids (the tokenizer check
of `api_logprobs_to_sparse` stops on a mismatch) and each row's target tokens (without eos) are
found as a run of the teacher's tokens. Rows that cannot be found (a label the teacher wrote as
" 5" where the student learns "5", or examples without log-probs) are listed in the file's
"skipped" metadata and get no KD term; the counts are printed.
"""

from __future__ import annotations

import json
from pathlib import Path

from stepdistill.config import Config
from stepdistill.errors import ConfigError, DataError
from stepdistill.kd.topk import SparseTargets, api_logprobs_to_sparse, write_topk


def _find_run(tokens: list[int], want: list[int]) -> int | None:
    """Start of the first occurrence of `want` as a contiguous run in `tokens`."""
    for start in range(len(tokens) - len(want) + 1) if want else ():
        if tokens[start : start + len(want)] == want:
            return start
    return None


def default_path(cfg: Config, out: str | None = None) -> Path:
    """Where the targets go: --out, else kd.topk_file, else next to the training annotations."""
    if out:
        return Path(out)
    if cfg.kd is not None and cfg.kd.topk_file:
        return Path(cfg.kd.topk_file)
    train = Path(cfg.data.train)
    return (train if train.is_dir() else train.parent) / f"{train.stem}.topk.safetensors"


def training_rows(cfg: Config, tokenizer, kind: str):
    """(annotations by id, encoded examples with keys) exactly as the trainer builds them."""
    from stepdistill.data.splits import load_splits
    from stepdistill.tasks import get_task
    from stepdistill.training.batching import encode_examples
    from stepdistill.training.formatting import build_pairs

    task = get_task(cfg.task)
    rows = load_splits(cfg.data, task)["train"]
    formatted = build_pairs(task, rows, cfg.train)
    if not formatted.examples:
        raise ConfigError(f"train.method={cfg.train.method}: no usable training example")
    encoded = encode_examples(tokenizer, formatted.examples, cfg.train, kind, formatted.ids)
    by_id = {a.id: a for a in rows}
    return [by_id[i] for i in formatted.ids], encoded


def _batches(encoded, batch_size: int, pad_id: int, kind: str):
    """Length-sorted batches (little padding) of whole examples: (keys, ids, mask, labels)."""
    from stepdistill.training.batching import collate, example_length

    order = sorted(range(len(encoded)), key=lambda i: example_length(encoded[i]))
    for start in range(0, len(order), batch_size):
        batch = collate([encoded[i] for i in order[start : start + batch_size]], pad_id, kind)
        yield batch.keys, batch.input_ids, batch.attention_mask, batch.labels


def whitebox_targets(cfg: Config, path: Path) -> int:
    """Run the white-box teacher of cfg.kd over the training rows; returns the keys written."""
    import torch

    from stepdistill.kd.term import load_checked_teacher
    from stepdistill.kd.whitebox import precompute_topk
    from stepdistill.training.models import load_student

    student = load_student(cfg.student)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # kd.teacher_device overrides it
    teacher, kind = load_checked_teacher(cfg.kd, student.tokenizer, student.model, device)
    _, encoded = training_rows(cfg, student.tokenizer, student.kind)
    batches = _batches(encoded, cfg.train.batch_size, student.tokenizer.pad_token_id, student.kind)
    meta = {"method": cfg.train.method, "student_tokenizer": student.name}
    return precompute_topk(teacher, kind, batches, path, k=cfg.kd.topk, meta=meta)


def api_targets(cfg: Config, path: Path) -> tuple[int, list[str]]:
    """Targets from the teacher_logprobs stored in the training annotations; (written, skipped)."""
    from stepdistill.training.models import load_student

    student = load_student(cfg.student)
    annotations, encoded = training_rows(cfg, student.tokenizer, student.kind)
    targets: dict[str, SparseTargets] = {}
    skipped: list[str] = []
    for ann, rows in zip(annotations, encoded):
        if not ann.teacher_logprobs:
            skipped.extend(r.key for r in rows)
            continue
        conv = api_logprobs_to_sparse(
            ann.teacher_logprobs, student.tokenizer, source=f"annotation '{ann.id}'"
        )
        for r in rows:
            want = r.target[:-1]  # API log-probs end with the text, not with the student's eos
            start = _find_run(conv.token_ids, want)
            if start is None:
                skipped.append(r.key)
            else:
                targets[r.key] = conv.targets[start : start + len(want)]
    if not targets:
        raise DataError(cfg.data.train, None, "teacher_logprobs", "no training row could be aligned")
    write_topk(path, targets, {"source": "api_logprobs", "skipped": json.dumps(skipped)})
    return len(targets), skipped


def kd_targets(cfg: Config, source: str = "whitebox", out: str | None = None) -> Path:
    """Write the top-k targets file for cfg's training rows; returns its path."""
    if source not in ("whitebox", "annotations"):
        raise ConfigError(f"kd-targets --from: '{source}' is not one of whitebox, annotations")
    path = default_path(cfg, out)
    if source == "whitebox":
        if cfg.kd is None:
            raise ConfigError("kd-targets: the config has no kd: section (kd.teacher_model, kd.topk)")
        n = whitebox_targets(cfg, path)
        print(f"{n} target sequences written to {path}")
    else:
        n, skipped = api_targets(cfg, path)
        print(f"{n} target sequences written to {path}; {len(skipped)} rows skipped (no KD term)")
    return path

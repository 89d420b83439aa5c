"""Deterministic splits: carve validation from train, subsample train, load a config's splits.

The paper carves 10% of train as validation with a fixed seed (CQA 9,741 -> 8,766 / 975; SVAMP
800 -> 720 / 80): the validation size is rounded up, as in `datasets.Dataset.train_test_split`.
Subsets for data-efficiency sweeps are nested: with one seed, the 12.5% subset lies inside the 25%
one, so curves compare like with like. Every function keeps the input order of the rows it returns.
"""

from __future__ import annotations

import json
import math
import random
import sys
from typing import TypeVar

from stepdistill.data.config import DataConfig
from stepdistill.data.readers import load_examples
from stepdistill.schema import Annotation
from stepdistill.tasks.base import Task

T = TypeVar("T")
# n * fraction in floating point can land a hair above an integer (e.g. 0.7 * 10 = 7.000000000000001);
# this slack stops that from rounding up a whole row.
_EPS = 1e-9


def _permutation(n: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def carve_validation(rows: list[T], fraction: float = 0.1, seed: int = 0) -> tuple[list[T], list[T]]:
    """Split rows into (train, valid) with ceil(n * fraction) rows in valid, chosen by `seed`."""
    if not 0 < fraction < 1:
        raise ValueError(f"valid fraction must be between 0 and 1, got {fraction}")
    n_valid = math.ceil(len(rows) * fraction - _EPS)
    chosen = set(_permutation(len(rows), seed)[:n_valid])
    train = [r for i, r in enumerate(rows) if i not in chosen]
    valid = [r for i, r in enumerate(rows) if i in chosen]
    return train, valid


def subsample(rows: list[T], fraction: float, seed: int = 0) -> list[T]:
    """n * fraction rows, rounded half up (at least one); with one seed smaller fractions are subsets."""
    if not 0 < fraction <= 1:
        raise ValueError(f"train fraction must be in (0, 1], got {fraction}")
    if fraction == 1 or not rows:
        return list(rows)
    k = max(1, math.floor(len(rows) * fraction + 0.5 + _EPS))
    # Taking a prefix of one fixed permutation is what makes the subsets nested.
    chosen = set(_permutation(len(rows), seed)[:k])
    return [r for i, r in enumerate(rows) if i in chosen]


def load_splits(data_cfg: DataConfig, task: Task) -> dict[str, list[Annotation]]:
    """train / valid (/ test when configured) per DataConfig.

    valid comes from `data.valid` or is carved from train (valid_fraction, split_seed) before
    `train_fraction` subsamples what is left, so every sweep point is scored on the same valid rows.
    `max_examples` then caps each split (first rows kept) for smoke runs.
    """
    train = load_examples(data_cfg.train, task)
    if data_cfg.valid is not None:
        valid = load_examples(data_cfg.valid, task)
    else:
        train, valid = carve_validation(train, data_cfg.valid_fraction, data_cfg.split_seed)
    train = subsample(train, data_cfg.train_fraction, data_cfg.split_seed)
    splits = {"train": train, "valid": valid}
    if data_cfg.test is not None:
        splits["test"] = load_examples(data_cfg.test, task)
    if data_cfg.max_examples is not None:
        splits = {name: rows[: data_cfg.max_examples] for name, rows in splits.items()}
    sources = {"train": data_cfg.train, "valid": data_cfg.valid or data_cfg.train, "test": data_cfg.test}
    for message in overlap_warnings(splits, sources):
        print(f"warning: {message}", file=sys.stderr, flush=True)
    return splits


def overlap_warnings(splits: dict[str, list[Annotation]], sources: dict[str, str | None]) -> list[str]:
    """One line per pair of splits that share example ids or identical inputs (a leak from training
    into evaluation), naming both files and up to three of the examples."""
    out = []
    names = list(splits)
    for i, a in enumerate(names):
        ids_a = {r.id for r in splits[a]}
        inputs_a = {json.dumps(r.fields, sort_keys=True): r.id for r in splits[a]}
        for b in names[i + 1 :]:
            where = f"{a} ({sources.get(a)}) and {b} ({sources.get(b)})"
            same_ids = [r.id for r in splits[b] if r.id in ids_a]
            if same_ids:
                out.append(f"{len(same_ids)} example id(s) in both {where}: {', '.join(same_ids[:3])}")
            same = [
                (inputs_a[k], r.id)
                for r in splits[b]
                if (k := json.dumps(r.fields, sort_keys=True)) in inputs_a
            ]
            if same:
                shown = ", ".join(f"{a}:{x} = {b}:{y}" for x, y in same[:3])
                out.append(f"{len(same)} identical input(s) in both {where}: {shown}")
    return out

"""The demo task's data: small arithmetic word problems generated deterministically from a seed.

    from stepdistill.demo_data import generate_demo_data
    generate_demo_data({"train": "runs/demo/data/train.jsonl", ...}, sizes={"train": 200}, seed=0)

Each record is the `arith` task's format plus a reference explanation (the calculation in words):

    {"id": "demo-train-0", "question": "Anne has 14 apples and gives Peter 2 and Tom 5. How many
     apples has she left?", "answer": "14 - 2 - 5", "explanation": "Anne starts with 14 apples. ..."}

Problems are drawn from several templates (add, subtract, add-then-subtract, multiply, share), and a
question never appears in two splits, so test scores measure generalisation to new problems.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

from stepdistill.data.io import write_jsonl

NAMES = [
    ("Anne", "she"),
    ("Peter", "he"),
    ("Maria", "she"),
    ("Tom", "he"),
    ("Lena", "she"),
    ("Omar", "he"),
    ("Yuki", "she"),
    ("Ravi", "he"),
]
ITEMS = ["apples", "marbles", "stickers", "pencils", "cookies", "stamps", "shells", "cards"]

# (question, equation, explanation) from a random generator.
Problem = tuple[str, str, str]


def _people(rng: random.Random, k: int) -> list[tuple[str, str]]:
    return rng.sample(NAMES, k)


def _give_away(rng: random.Random) -> Problem:
    (a, pron), (b, _), (c, _) = _people(rng, 3)
    item = rng.choice(ITEMS)
    x, y = rng.randint(1, 9), rng.randint(1, 9)
    total = x + y + rng.randint(0, 10)
    q = f"{a} has {total} {item} and gives {b} {x} and {c} {y}. How many {item} has {pron} left?"
    eq = f"{total} - {x} - {y}"
    why = (
        f"{a} starts with {total} {item}. {pron.capitalize()} gives away {x} and then {y}, "
        f"so {pron} has {eq} = {total - x - y} {item} left."
    )
    return q, eq, why


def _find_more(rng: random.Random) -> Problem:
    ((a, pron),) = _people(rng, 1)
    item = rng.choice(ITEMS)
    x, y = rng.randint(2, 30), rng.randint(2, 30)
    q = f"{a} has {x} {item} and finds {y} more. How many {item} does {pron} have now?"
    eq = f"{x} + {y}"
    why = f"{a} had {x} {item} and found {y} more, so {pron} has {eq} = {x + y} {item}."
    return q, eq, why


def _buy_and_give(rng: random.Random) -> Problem:
    (a, pron), (b, _) = _people(rng, 2)
    item = rng.choice(ITEMS)
    x, y = rng.randint(2, 20), rng.randint(2, 20)
    z = rng.randint(1, x + y - 1)
    q = f"{a} has {x} {item}, buys {y} more and then gives {z} to {b}. How many {item} does {a} have?"
    eq = f"{x} + {y} - {z}"
    why = (
        f"{a} had {x} {item}. Buying {y} gives {x + y}, and giving {z} to {b} leaves "
        f"{eq} = {x + y - z} {item}."
    )
    return q, eq, why


def _boxes(rng: random.Random) -> Problem:
    item = rng.choice(ITEMS)
    per, boxes = rng.randint(2, 12), rng.randint(2, 9)
    q = f"A box holds {per} {item}. How many {item} are in {boxes} boxes?"
    eq = f"{per} * {boxes}"
    why = (
        f"Each box holds {per} {item} and there are {boxes} boxes, so there are {eq} = {per * boxes} {item}."
    )
    return q, eq, why


def _share(rng: random.Random) -> Problem:
    item = rng.choice(ITEMS)
    friends, each = rng.randint(2, 8), rng.randint(2, 9)
    total = friends * each  # divisible by construction: answers stay whole numbers
    q = f"{total} {item} are shared equally by {friends} friends. How many {item} does each friend get?"
    eq = f"{total} / {friends}"
    why = f"{total} {item} are split among {friends} friends, so each gets {eq} = {each} {item}."
    return q, eq, why


TEMPLATES: dict[str, Callable[[random.Random], Problem]] = {
    "subtract": _give_away,
    "add": _find_more,
    "add_subtract": _buy_and_give,
    "multiply": _boxes,
    "share": _share,
}


def generate_problems(n: int, seed: int = 0) -> list[dict[str, str]]:
    """n distinct problems, templates taken in turn so every split mixes them evenly."""
    rng = random.Random(seed)
    names = list(TEMPLATES)
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"cannot generate {n} distinct demo problems; ask for fewer")
        template = names[len(out) % len(names)]
        q, eq, why = TEMPLATES[template](rng)
        if q in seen:
            continue
        seen.add(q)
        out.append({"question": q, "answer": eq, "explanation": why, "template": template})
    return out


def demo_splits(sizes: dict[str, int], seed: int = 0) -> dict[str, list[dict[str, str]]]:
    """Records per split (ids "demo-<split>-<i>"); splits are cut from one pool, so none overlap."""
    pool = generate_problems(sum(sizes.values()), seed)
    out: dict[str, list[dict[str, str]]] = {}
    start = 0
    for split, n in sizes.items():
        out[split] = [{"id": f"demo-{split}-{i}", **rec} for i, rec in enumerate(pool[start : start + n])]
        start += n
    return out


def generate_demo_data(
    paths: dict[str, str | os.PathLike], sizes: dict[str, int], seed: int = 0
) -> dict[str, Path]:
    """Write each split's JSONL (atomically) to paths[split]; splits without a size are skipped."""
    missing = sorted(set(paths) - set(sizes))
    if missing:
        raise ValueError(f"no demo size given for split(s) {', '.join(missing)}")
    records = demo_splits({s: sizes[s] for s in paths}, seed)
    written = {}
    for split, path in paths.items():
        write_jsonl(path, records[split])
        written[split] = Path(path)
    return written

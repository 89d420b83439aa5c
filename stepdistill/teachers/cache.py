"""SQLite cache of teacher answers: paid work is stored the moment it arrives and never asked for twice.

One row per request, keyed by a hash of (backend, model, backend settings that change answers, prompt,
sampling parameters, sample index). API keys and server addresses are not part of the key: moving a
model to another host or rotating a key keeps the cache valid. The database runs in WAL mode and each
answer is its own committed transaction, so a crash (or Ctrl-C, or a killed server) loses at most the
requests that were still in flight.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stepdistill.errors import DiskFullError
from stepdistill.teachers.base import Completion, Prompt, Sampling
from stepdistill.teachers.config import TeacherConfig

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    teacher TEXT NOT NULL,
    example_id TEXT NOT NULL,
    sample INTEGER NOT NULL,
    completion TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    logprobs TEXT,
    created REAL NOT NULL
)
"""
# Facts about the teacher that outlive one run, e.g. the model name its server answered with.
_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


def teacher_identity(cfg: TeacherConfig) -> str:
    """The teacher_model string: "backend:model" (precomputed without a model: the file's name)."""
    model = cfg.model
    if not model and cfg.backend == "precomputed" and cfg.path:
        model = Path(cfg.path).stem
    return f"{cfg.backend}:{model}"


def request_key(cfg: TeacherConfig, prompt: Prompt, sampling: Sampling, sample: int, example_id: str) -> str:
    """Hash identifying one request. Identical prompts share an answer (and are sent once), except
    for precomputed teachers, whose answers are looked up by example id."""
    payload: dict[str, Any] = {
        "backend": cfg.backend,
        "model": cfg.model,
        "endpoint": cfg.endpoint,
        "prompt_format": cfg.prompt_format,
        "gguf_file": cfg.gguf_file,
        "extra_body": cfg.extra_body,
        "prompt": [prompt.text, list(prompt.messages)],
        "sampling": {
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "stop": list(sampling.stop),
            "seed": sampling.seed_for(sample),
            "top_logprobs": sampling.top_logprobs,
        },
        "sample": sample,
    }
    if cfg.dtype != "auto":  # other weights, other answers (auto keeps the keys caches already hold)
        payload["dtype"] = cfg.dtype
    if cfg.backend == "precomputed":
        payload["id"] = example_id
        payload["path"] = cfg.path
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """Answers by request key. Use as a context manager or call close()."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)  # autocommit; we BEGIN ourselves
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a committed answer survives any crash of this process (the WAL is in
        # the OS's hands); only a power loss can drop the last few. FULL would fsync every answer
        # (~5 ms each, blocking the event loop) and cap a fast server at ~200 answers/s.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._db.execute(_META)

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def get_many(self, keys: Iterable[str]) -> dict[str, Completion]:
        """The cached completions among `keys` (missing keys are simply absent)."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, Completion] = {}
        for start in range(0, len(keys), 500):  # SQLite limits the number of bound parameters
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                "SELECT key, completion, prompt_tokens, completion_tokens, logprobs"
                f" FROM responses WHERE key IN ({marks})",
                chunk,
            )
            for key, text, ptok, ctok, logprobs in rows:
                out[key] = Completion(
                    text=text,
                    prompt_tokens=ptok,
                    completion_tokens=ctok,
                    logprobs=json.loads(logprobs) if logprobs else None,
                    cached=True,
                )
        return out

    def put(self, key: str, teacher: str, example_id: str, sample: int, comp: Completion) -> None:
        """Store one successful answer and commit at once. Failures are never cached (a re-run
        retries them)."""
        if not comp.ok or comp.text is None:
            raise ValueError(f"only successful completions are cached (got error {comp.error!r})")
        self._write(
            "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                teacher,
                example_id,
                sample,
                comp.text,
                comp.prompt_tokens,
                comp.completion_tokens,
                json.dumps(comp.logprobs) if comp.logprobs is not None else None,
                time.time(),
            ),
        )

    def _write(self, sql: str, params: tuple) -> None:
        try:
            self._db.execute(sql, params)
        except sqlite3.OperationalError as err:
            if "full" not in str(err):
                raise
            # The failed statement is rolled back; every answer committed before it is kept.
            raise DiskFullError(
                f"{self.path}: disk full ({err}); the {len(self)} answers stored before are kept: "
                "free some space and re-run the same command to continue"
            ) from None

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

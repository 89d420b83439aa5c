"""`stepdistill predict STUDENT.gguf --input FILE`: label records with an exported student, no run folder.

The GGUF file carries what the student needs beside its weights (export stores it under
`stepdistill.student`: the task, the method and its prompt settings), so the records are read,
prompted, decoded and parsed exactly as `predict RUN_DIR` does, with llama.cpp doing the arithmetic.
"""

from __future__ import annotations

import os
from pathlib import Path

from stepdistill.data.io import write_jsonl
from stepdistill.errors import ConfigError
from stepdistill.evaluate import predict_labels
from stepdistill.evaluate_config import EvalConfig
from stepdistill.export.gguf_file import EXTRA_KEY
from stepdistill.export.llama_student import LlamaStudent, stored_settings
from stepdistill.tasks.config import TaskConfig
from stepdistill.training.config import TrainConfig


def predict_gguf(
    gguf: str | os.PathLike,
    input_path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    rationale: bool = False,
    threads: int | None = None,
) -> Path:
    """Label the records of a JSONL/CSV/Parquet file with an exported student; returns the output
    path (default: predictions-<input name>.jsonl beside the GGUF file)."""
    from stepdistill.data.readers import load_examples
    from stepdistill.tasks import get_task

    gguf = Path(gguf)
    if not gguf.is_file():
        raise ConfigError(f"{gguf}: no such GGUF file")
    settings = stored_settings(gguf)
    if not settings:
        raise ConfigError(f"{gguf}: no {EXTRA_KEY} metadata: not a file written by `stepdistill export`")
    task = get_task(TaskConfig.model_validate(settings["task"]))
    train_cfg = TrainConfig.model_validate(settings["train"])
    eval_cfg = EvalConfig.model_validate(settings["eval"])
    examples = load_examples(input_path, task)
    n_ctx = train_cfg.max_input_length + 2 * train_cfg.max_target_length + eval_cfg.max_new_tokens + 8
    student = LlamaStudent(gguf, threads=threads, n_ctx=n_ctx, ranking=eval_cfg.label_decoding == "rank")
    try:
        rows = predict_labels(student, task, examples, train_cfg, eval_cfg, rationale=rationale)
    finally:
        student.close()
    out_path = Path(out) if out else gguf.parent / f"predictions-{Path(input_path).stem}.jsonl"
    write_jsonl(out_path, rows)
    return out_path

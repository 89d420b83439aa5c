"""runs/<name>/train_log.jsonl and tb/: one JSON row per log window or evaluation, appended.

Rows are appended (one write per row, never the whole file again), so logging costs the same at
step 100 and at step 100,000. On resume the file is cut back once to the rows up to the resumed
checkpoint's step (a stopped run may have logged rows after it, or a last line half written when
the process was killed), so a resumed run's file equals an uninterrupted run's. Only the main
process writes; TensorBoard scalars go under train/ (or eval/ for validation keys).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stepdistill.data.io import write_jsonl


def rows_up_to(path: Path, step: int) -> list[dict[str, Any]]:
    """The rows of a train log with step <= `step`; a line cut short by a kill (the last) is dropped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # only the last line can be partial: rows are appended whole, then flushed
        if isinstance(row, dict) and row.get("step", step + 1) <= step:
            rows.append(row)
    return rows


class TrainLog:
    """Appends rows to train_log.jsonl and TensorBoard; `resume_step` cuts the file back once."""

    def __init__(self, run_dir: Path, main: bool, resume_step: int | None = None):
        self.path = Path(run_dir) / "train_log.jsonl"
        self.main = main
        self.writer = None
        if not main:
            return
        from torch.utils.tensorboard import SummaryWriter

        if resume_step is not None:
            write_jsonl(self.path, rows_up_to(self.path, resume_step))
        elif self.path.exists():
            self.path.unlink()  # a fresh run (the run folder held no checkpoint)
        self.writer = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=resume_step)

    def write(self, row: dict[str, Any]) -> None:
        if not self.main:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        for key, value in row.items():
            if key not in ("step", "epoch") and isinstance(value, (int, float)):
                tag = f"eval/{key}" if key.startswith("valid") else f"train/{key}"
                self.writer.add_scalar(tag, value, row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

"""train_log.jsonl is appended row by row (never rewritten), and resume cuts it back once."""

from __future__ import annotations

import json

from stepdistill.training.train_log import TrainLog, rows_up_to


def test_rows_are_appended_to_the_same_file(tmp_path):
    log = TrainLog(tmp_path, main=True)
    log.write({"step": 1, "loss": 2.0})
    inode = (tmp_path / "train_log.jsonl").stat().st_ino
    log.write({"step": 2, "loss": 1.5, "lr": 0.1})
    log.write({"step": 2, "valid_accuracy": 0.5})
    log.close()
    path = tmp_path / "train_log.jsonl"
    assert path.stat().st_ino == inode  # appended in place: an atomic rewrite would replace the file
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [
        {"step": 1, "loss": 2.0},
        {"step": 2, "loss": 1.5, "lr": 0.1},
        {"step": 2, "valid_accuracy": 0.5},
    ]
    assert any((tmp_path / "tb").iterdir())


def test_resume_keeps_rows_up_to_the_checkpoint_and_drops_a_cut_line(tmp_path):
    path = tmp_path / "train_log.jsonl"
    rows = [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3, 4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "lo')  # killed mid-write
    assert rows_up_to(path, 3) == rows[:3]
    log = TrainLog(tmp_path, main=True, resume_step=2)
    log.write({"step": 3, "loss": 0.25})
    log.close()
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        *rows[:2],
        {"step": 3, "loss": 0.25},
    ]


def test_a_fresh_run_starts_a_new_log_and_other_processes_write_nothing(tmp_path):
    (tmp_path / "train_log.jsonl").write_text('{"step": 9}\n')
    TrainLog(tmp_path, main=True).close()
    assert not (tmp_path / "train_log.jsonl").exists()
    other = TrainLog(tmp_path / "rank1", main=False)
    other.write({"step": 1, "loss": 1.0})
    assert not (tmp_path / "rank1").exists()

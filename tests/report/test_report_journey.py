"""The report of the user journey: a linear speed plot with values on the bars, and the teacher's
timing from `annotate` reaching plain `train` folders, shown once."""

from __future__ import annotations

import yaml

from stepdistill.data.io import write_json


def test_speed_plot_is_linear_with_values_on_the_bars(monkeypatch):
    from matplotlib.axes import Axes

    from stepdistill.report import plots

    labels: list[list[str]] = []
    scales: list[str] = []
    real_label = Axes.bar_label

    def bar_label(self, bars, **kw):
        labels.append(kw["labels"])
        return real_label(self, bars, **kw)

    monkeypatch.setattr(Axes, "bar_label", bar_label)
    monkeypatch.setattr(Axes, "set_xscale", lambda self, value, **kw: scales.append(value))
    rows = [
        {"who": "teacher", "name": "t", "ms_per_example": 51.0},
        {"who": "student", "name": "s", "ms_per_example": 46.04},
    ]
    assert plots.speed_figure(rows)[:4] == b"\x89PNG"
    assert labels == [["51.0 ms", "46.0 ms"]] and scales == []


def test_teacher_timing_beside_the_annotations_reaches_train_runs(tmp_path):
    """A report of `train` folders shows the teacher row that `annotate` timed, once."""
    from stepdistill.report.collect import collect
    from stepdistill.report.stats import speed_rows

    annotations = tmp_path / "runs" / "s" / "annotations"
    annotations.mkdir(parents=True)
    write_json(annotations / "summary.json", {"splits": {}, "total": {}})
    write_json(
        tmp_path / "runs" / "s" / "teacher_timing.json", {"teacher_model": "t", "ms_per_example": 200.0}
    )
    for method in ("standard", "step_by_step"):
        folder = tmp_path / "runs" / "s" / method
        folder.mkdir()
        (folder / "config.yaml").write_text(
            yaml.safe_dump({"data": {"train": str(annotations / "train.jsonl")}})
        )
        metrics = {
            "method": method,
            "splits": {},
            "latency": {"ms_per_example": 50.0},
            "student": {"model": "m"},
        }
        write_json(folder / "metrics.json", metrics)
    runs = collect([tmp_path / "runs" / "s" / "standard", tmp_path / "runs" / "s" / "step_by_step"])
    rows = speed_rows(runs)
    assert [(r["who"], r["name"], r["speedup"]) for r in rows] == [
        ("teacher", "t", None),
        ("student", "m (standard)", 4.0),
        ("student", "m (step_by_step (teacher labels))", 4.0),
    ]

"""The report of a hand-written finished run: tables against metrics.json, escaping, layouts, errors."""

from __future__ import annotations

import math
import re
import shutil

import pytest

from stepdistill.errors import DataError
from stepdistill.report.build import build_report
from stepdistill.report.collect import collect
from stepdistill.report.stats import accuracy_rows, mean_se


def _md_rows(md: str, first_cell: str) -> list[list[str]]:
    rows = []
    for line in md.splitlines():
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            if cells[0] == first_cell:
                rows.append(cells)
    return rows


def _section(md: str, title: str) -> str:
    return md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_mean_se_against_hand_computation():
    s = mean_se([1.0, 2.0, 3.0, 4.0])
    assert s.mean == 2.5 and s.n == 4
    assert s.se == pytest.approx(math.sqrt((1.5**2 * 2 + 0.5**2 * 2) / 3 / 4))
    one = mean_se([0.25])
    assert (one.mean, one.se, one.n) == (0.25, None, 1)


def test_accuracy_rows_group_seeds(finished_run):
    rows = accuracy_rows(collect([finished_run])[0].trainings, "test")
    got = {(r.method, r.fraction): (r.seeds, r.stat.mean, r.stat.se, r.teacher) for r in rows}
    assert [(r.method, r.fraction) for r in rows] == [
        ("standard", 1.0),
        ("distill", 1.0),
        ("step_by_step (teacher labels)", 0.5),
        ("step_by_step (teacher labels)", 1.0),
    ]
    assert {r.student for r in rows} == {"tiny-llama"}
    seeds, mean, se, teacher = got[("step_by_step (teacher labels)", 1.0)]
    assert seeds == {0: 7 / 8, 1: 6 / 8} and mean == pytest.approx(0.8125)
    assert se == pytest.approx(0.0625) and teacher == 0.75


def test_markdown_tables_match_metrics(finished_run):
    html_path = build_report([finished_run])
    assert html_path == finished_run / "report" / "report.html"
    md = (finished_run / "report" / "report.md").read_text()
    arith = {(r[2], r[3]): r for r in _md_rows(_section(md, "Accuracy (test)"), "arith")}
    # header: task, student, method, fraction, params, seeds, mean ± se, seed 0, seed 1, teacher
    assert arith[("standard", "1")][4:] == ["1.6M", "2", "62.50 ± 12.50", "50.00", "75.00", "75.00"]
    assert arith[("distill", "1")][6] == "62.50 ± 0.00"
    sbs = "step_by_step (teacher labels)"
    assert arith[(sbs, "1")][6:] == ["81.25 ± 6.25", "87.50", "75.00", "75.00"]
    assert arith[(sbs, "0.5")][6] == "50.00 ± 12.50"
    # cost and speed: teacher 800 ms/example vs student 4 ms (standard) and 5 ms (step_by_step)
    teacher = _md_rows(md, "teacher")[0]
    assert teacher[3:6] == ["134.5M", "800.00", "1.2"]
    students = {r[1]: r for r in _md_rows(md, "student")}
    assert students["tiny-llama (standard)"][-1] == "200.0×"
    assert students["tiny-llama (step_by_step (teacher labels))"][-1] == "160.0×"
    quality = _md_rows(md, "demo")[0]
    assert quality[4:] == ["50.00", "20 / 40", "3", "1", "2 (timeout: 2)"]
    for fig in ("accuracy_test", "accuracy_valid", "efficiency", "curves", "speed"):
        assert f"](figures/{fig}.png)" in md
        assert (finished_run / "report" / "figures" / f"{fig}.png").read_bytes()[:4] == b"\x89PNG"


def test_html_is_self_contained_and_escaped(finished_run):
    html = build_report([finished_run]).read_text()
    assert html.count("<img ") == 5
    assert html.count('src="data:image/png;base64,') == 5
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert "&lt;script&gt;" in html and "&amp; a | b" in html
    assert "<td>81.25 ± 6.25</td>" in html and "<td>200.0×</td>" in html
    # sample_size: 3 from the run's config, spread evenly over the 8 test examples
    assert re.findall(r'<div class="example"><b>([^<]+)</b>', html) == [
        "arith-test-0",
        "arith-test-2",
        "arith-test-4",
    ]
    # the student rationale of step_by_step is shown, and wrong answers are marked
    assert "0 plus 1." in html and "✗ wrong" in html


def test_sample_marks_and_markdown_escaping(finished_run, nasty_text):
    build_report([finished_run], sample_size=8)
    md = (finished_run / "report" / "report.md").read_text()
    assert md.count("### arith-test-") == 8
    # standard got 4 of 8 right in seed 0: examples 4..7 are marked wrong
    assert "- standard: `7 - 1` ✗" in md and "- standard: `0 + 1` ✓" in md
    assert nasty_text.replace("|", "\\|") in md


def test_plain_training_folder_and_combining_runs(finished_run, tmp_path, training_writer):
    plain = tmp_path / "plain"
    training_writer(plain, "distill", 1.0, 3, 2)
    path = build_report([plain])
    md = (plain / "report" / "report.md").read_text()
    assert path == plain / "report" / "report.html"
    assert _md_rows(_section(md, "Accuracy (test)"), "arith")[0][6] == "25.00"
    assert "Teacher annotation" not in md and "Data efficiency" not in md
    # combining: the plain run's seed 3 joins the distill group of the sweep
    out = tmp_path / "combined"
    build_report([finished_run, plain], out=out)
    md = _section((out / "report.md").read_text(), "Accuracy (test)")
    rows = {(r[2], r[3]): r for r in _md_rows(md, "arith")}
    assert rows[("distill", "1")][5] == "3"  # three seeds
    assert rows[("distill", "1")][6].startswith("50.00 ± ")


def test_errors_name_the_file_and_field(finished_run, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a finished run folder"):
        build_report([tmp_path / "empty"])
    bad = finished_run / "distill-f1-s0" / "metrics.json"
    bad.write_text(bad.read_text().replace('"accuracy": 0.625', '"accuracy": "high"', 1))
    with pytest.raises(DataError, match=r"distill-f1-s0/metrics.json: field 'splits.test.accuracy'"):
        build_report([finished_run])
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"metrics.json:1: not valid JSON"):
        build_report([finished_run])
    shutil.rmtree(finished_run / "distill-f1-s0")
    log = finished_run / "standard-f1-s0" / "train_log.jsonl"
    log.write_text(log.read_text() + "oops\n")
    with pytest.raises(DataError, match=r"train_log.jsonl:7: not valid JSON"):
        build_report([finished_run])


def test_rationales_kept_and_vote_against_samples(finished_run, training_writer):
    import json

    from stepdistill.data.io import write_json

    summary_path = finished_run / "annotations" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["splits"]["train"]["vote_by_k"] = {
        "1": {"accuracy": 0.15, "any_correct": 0.15, "n": 40},
        "8": {"accuracy": 0.25, "any_correct": 0.6, "n": 40},
    }
    write_json(summary_path, summary)
    folder = finished_run / "sbs-agreeing"
    training_writer(folder, "step_by_step", 1.0, 0, 7)
    (folder / "config.yaml").write_text("train:\n  rationales: agreeing\n")
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["train"].update(
        rationales_per_example={"0": 16, "1": 14, "2": 10}, rationale_rows=34, rationale_share=0.6,
        rationale_tokens={"n": 34, "median": 31, "p90": 48, "max": 60}, rationales_over_max_tokens=0,
        vote_agreement=0.4125,
    )  # fmt: skip
    write_json(folder / "metrics.json", metrics)
    build_report([finished_run])
    md = (finished_run / "report" / "report.md").read_text()
    kept = _md_rows(
        _section(md, "Rationales trained on"), "step_by_step (teacher labels, agreeing rationales)"
    )
    assert kept == [
        ["step_by_step (teacher labels, agreeing rationales)", "0", "0: 16 / 1: 14 / 2: 10", "34", "60.0", "31",
         "48", "0", "41.2"]
    ]  # fmt: skip
    votes = _md_rows(_section(md, "Teacher vote against samples"), "demo")
    assert votes == [
        ["demo", "train", "1", "15.0", "15.0", "40"],
        ["demo", "train", "8", "25.0", "60.0", "40"],
    ]

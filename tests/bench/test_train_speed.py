"""bench/train_speed.py on a tiny random decoder: two timed steps of the real trainer (fit) and of the
reference design; the report's shape and that both designs trained on the same non-padding tokens.
No timing is asserted."""

from __future__ import annotations

import copy
import json

import pytest


@pytest.fixture(scope="module")
def report(tiny_causal_dir, tmp_path_factory):
    import train_speed

    if not train_speed.SHARED_DATA.exists():
        pytest.skip(f"reference data not found at {train_speed.SHARED_DATA} (STEPDISTILL_SHARED_DATA)")
    from stepdistill.training.config import StudentConfig
    from stepdistill.training.models import load_student

    anns = train_speed.load_train_annotations("svamp")[:12]
    base = load_student(StudentConfig(model=str(tiny_causal_dir)), seed=0)
    args = train_speed.parse_args(
        ["--batch-sizes", "2", "--warmup", "1", "--steps", "2", "--repeats", "2",
         "--designs", "reference,ours,standard,packed", "--design", "ghost=train.no_such_key=1"]
    )  # fmt: skip
    report = train_speed.run(args, {"tiny": lambda: copy.deepcopy(base)}, anns, "test")
    path = tmp_path_factory.mktemp("speed") / "train_speed-cpu.json"
    from stepdistill.data.io import write_json

    write_json(path, report)
    return json.loads(path.read_text()), train_speed.markdown(report)


def test_report_shape(report):
    data, text = report
    assert {"date", "machine", "command", "reference", "args", "results"} <= set(data)
    (block,) = data["results"]
    assert block["batch_size"] == 2 and block["repeats_run"] == 2
    assert list(block["designs"]) == ["reference", "ours", "standard", "packed", "ghost"]
    for name in ("reference", "ours", "standard"):
        d = block["designs"][name]
        assert d["available"] and len(d["runs"]) == 2
        for run in d["runs"]:
            assert run["steps"] == 2 and run["examples"] == 4
            assert run["seconds"] > 0 and run["peak_bytes"] > 0 and run["flops"] > 0
        assert set(d["tokens_per_s"]) == {"median", "min", "max"}
    assert set(block["designs"]["ours"]["speedup_wall"]) == {"median", "min", "max"}
    assert set(block["memory_ratio_over_start"]) == {"median", "min", "max"}
    ghost = block["designs"]["ghost"]
    assert not ghost["available"] and ghost["runs"] == [] and "train.no_such_key" in ghost["reason"]
    assert "| tiny | 2 | ghost | not available" in text


def test_designs_train_on_the_same_tokens(report):
    data, _ = report
    (block,) = data["results"]
    ref = [r["tokens"] for r in block["designs"]["reference"]["runs"]]
    ours = [r["tokens"] for r in block["designs"]["ours"]["runs"]]
    std = [r["tokens"] for r in block["designs"]["standard"]["runs"]]
    assert ref == ours and len(set(ref)) == 1 and ref[0] > 0
    assert block["same_tokens_as_reference"] is True
    assert 0 < std[0] < ref[0]  # label rows only
    assert block["designs"]["reference"]["runs"][0]["passes_per_step"] == 2
    # the FLOPs of a window are a function of its rows, identical for the two designs
    assert block["designs"]["reference"]["runs"][0]["flops"] == block["designs"]["ours"]["runs"][0]["flops"]

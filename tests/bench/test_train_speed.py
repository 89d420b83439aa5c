"""bench/train_speed.py on a tiny random decoder: two timed steps of the real trainer (fit) and of the
reference design; the report's shape and that both designs trained on the same non-padding tokens.
No timing is asserted."""

from __future__ import annotations

import copy
import json

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["causal", "seq2seq"])
def report(request, tiny_causal_dir, tiny_seq2seq_dir, tmp_path_factory):
    import train_speed

    if not train_speed.SHARED_DATA.exists():
        pytest.skip(f"reference data not found at {train_speed.SHARED_DATA} (STEPDISTILL_SHARED_DATA)")
    from stepdistill.training.config import StudentConfig
    from stepdistill.training.models import load_student

    anns = train_speed.load_train_annotations("svamp")[:12]
    model_dir = tiny_causal_dir if request.param == "causal" else tiny_seq2seq_dir
    base = load_student(StudentConfig(model=str(model_dir)), seed=0)
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


def _run(tokens, seconds, cpu, peak, over, flops=0, passes=2.0):
    return {"steps": 4, "examples": 40, "tokens": tokens, "seconds": seconds, "cpu_seconds": cpu,
            "peak_bytes": peak, "peak_over_start_bytes": over, "flops": flops, "passes_per_step": passes}  # fmt: skip


def _block(designs):
    return {"student": "m", "batch_size": 64, "repeats_run": 2,
            "designs": {d: {"title": d, "available": True, "runs": runs} for d, runs in designs.items()}}  # fmt: skip


def test_summarise_pairs_repeats_with_the_reference():
    from train_speed import summarise

    block = summarise(
        _block({
            "reference": [_run(4000, 20.0, 10.0, 1000, 300), _run(4000, 20.0, 10.0, 1000, 300)],
            "ours": [_run(4000, 5.0, 4.0, 1100, 330), _run(4000, 10.0, 8.0, 1100, 330)],
            "standard": [_run(1000, 4.0, 4.0, 1000, 300, passes=1.0), _run(1000, 4.0, 4.0, 1000, 300, passes=1.0)],
        }),
        peak_tflops=None, ceiling_tflops=None,
    )  # fmt: skip
    ours = block["designs"]["ours"]
    assert ours["tokens_per_s"] == pytest.approx({"median": 600.0, "min": 400.0, "max": 800.0})
    # 800 and 400 tokens/s against 200: 4x and 2x; per CPU-second 1000 and 500 against 400
    assert ours["speedup_wall"] == pytest.approx({"median": 3.0, "min": 2.0, "max": 4.0})
    assert ours["speedup_cpu"] == pytest.approx({"median": 1.875, "min": 1.25, "max": 2.5})
    assert block["memory_ratio_over_start"]["median"] == pytest.approx(1.1)
    assert block["memory_ratio_total"]["median"] == pytest.approx(1.1)
    assert block["same_tokens_as_reference"] is True
    assert "speedup_wall" not in block["designs"]["standard"]  # other rows: not a speed comparison


def test_mfu_from_counted_flops_and_the_markdown():
    from train_speed import markdown, summarise

    block = summarise(
        _block({
            "reference": [_run(4000, 20.0, 10.0, 1000, 300, flops=2 * 10**15)],
            "ours": [_run(4000, 5.0, 4.0, 1100, 330, flops=2 * 10**15)],
            "packed": [],
        }),
        peak_tflops=1000.0, ceiling_tflops=800.0,
    )  # fmt: skip
    block["designs"]["packed"].update(available=False, reason="not available: no train.packing")
    ours, ref = block["designs"]["ours"], block["designs"]["reference"]
    assert ours["achieved_tflops"]["median"] == pytest.approx(400.0)  # 2e15 FLOPs in 5 s
    assert ours["mfu"]["median"] == pytest.approx(0.4)
    assert ours["mfu_of_ceiling"]["median"] == pytest.approx(0.5)
    assert ref["mfu"]["median"] == pytest.approx(0.1)  # same rows, same FLOPs, 4x the time
    info = {"gpu": "NVIDIA H200", "cpu": "x", "cores": 16, "threads": 16, "torch": "2.11",
            "peak_tflops": 1000.0, "matmul_ceiling_tflops": 800.0, "matmul_ceiling_shape": "8192x8192x8192 bf16"}  # fmt: skip
    report = {"date": "2026-12-02T12:00:00", "machine": info, "command": "python bench/train_speed.py",
              "args": {"device": "cuda", "warmup": 2, "steps": 20, "bf16": True}, "results": [block]}  # fmt: skip
    text = markdown(report)
    ours_line = next(line for line in text.splitlines() if line.startswith("| m | 64 | ours |"))
    assert ours_line.endswith("| 400 (400-400) | 40.0% (40.0%-40.0%) |")
    assert "| m | 64 | packed | not available: no train.packing |" in text
    assert "measured in this run" in text and "1000.0 TFLOP/s" in text

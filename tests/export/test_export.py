"""`stepdistill export` on a trained student: the GGUF files answer like the PyTorch student.

One tiny student is trained and exported once (conftest.py); the tests read its files, serve it
with a real llama.cpp server, predict with it, report on it and break its export on purpose.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from stepdistill.cli import main
from stepdistill.data.io import iter_jsonl, write_jsonl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "teachers"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from exportkit import N_TRAIN, NEEDS_LLAMA, write_run_config  # noqa: E402
from test_llama_server import free_port, start_llama  # noqa: E402

pytestmark = [pytest.mark.slow, NEEDS_LLAMA]
N = N_TRAIN  # test rows: half of the training problems and as many new ones


def _preds(path: Path) -> dict[str, str | None]:
    return {r["id"]: r["pred"] for _, r in iter_jsonl(path)}


def _format(deploy: dict, fmt: str) -> dict:
    return next(r for r in deploy["formats"] if r["format"] == fmt)


def test_f16_gives_the_pytorch_students_greedy_predictions(trained_run, exported):
    torch_preds = _preds(trained_run / "predictions" / "test.jsonl")
    f16_preds = _preds(trained_run / "export" / "predictions" / "f16-test.jsonl")
    assert f16_preds == torch_preds  # every test row, word for word
    # The student is neither always right nor always wrong, so agreement is not trivial.
    right = sum(r["correct"] for _, r in iter_jsonl(trained_run / "predictions" / "test.jsonl"))
    assert 0 < right < N and len(set(torch_preds.values())) > 5
    f16 = _format(exported, "f16")
    assert (f16["correct"], f16["n"], f16["changed"]) == (right, N, 0)
    assert (f16["diff"], f16["diff_lo"], f16["diff_hi"], f16["mcnemar_p"]) == (0.0, 0.0, 0.0, 1.0)
    assert exported["pytorch"]["accuracy"] == right / N
    # llama.cpp's embedded tokenizer cuts every test prompt into the training tokenizer's ids
    assert exported["tokenizer_agreement"] == {"same": N, "n": N}


def test_quantized_files_are_scored_against_the_pytorch_student(trained_run, exported):
    f16, q8, q4 = (_format(exported, f) for f in ("f16", "q8_0", "q4_k_m"))
    assert q8["diff_lo"] <= 0 <= q8["diff_hi"] and q8["mcnemar_p"] > 0.05 and q8["changed"] <= 1
    assert (
        q8["size_bytes"] < 0.7 * f16["size_bytes"]
    )  # the tiny model's f32 norms weigh more than a real one's
    # every number in deploy.json is what the predictions file says
    torch_rows = {r["id"]: r for _, r in iter_jsonl(trained_run / "predictions" / "test.jsonl")}
    for r in (f16, q8, q4):
        rows = [
            row for _, row in iter_jsonl(trained_run / "export" / "predictions" / f"{r['format']}-test.jsonl")
        ]
        assert r["correct"] == sum(row["correct"] for row in rows)
        assert r["changed"] == sum(row["pred"] != torch_rows[row["id"]]["pred"] for row in rows)
        assert r["diff"] == pytest.approx((r["correct"] - sum(t["correct"] for t in torch_rows.values())) / N)
        assert r["diff_lo"] <= r["diff"] <= r["diff_hi"]
        assert r["size_bytes"] == (trained_run / "export" / r["file"]).stat().st_size
        assert r["ms_per_example"] > 0 and r["examples_per_s"] == pytest.approx(1000 / r["ms_per_example"])


def test_model_card_and_modelfile_describe_the_files(trained_run, exported):
    folder = trained_run / "export"
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["library_name"] == "gguf" and "base_model" not in meta  # a local folder has no hub id
    card = meta["stepdistill"]
    assert (card["task"], card["method"], card["label_source"], card["teacher"]) == (
        "arith",
        "standard",
        "gold",
        None,
    )
    assert card["data"] == {"train_examples": N_TRAIN, "rationale_examples": 0, "test_examples": N}
    assert [(r["format"], r["accuracy"]) for r in card["results"]] == [
        (r["format"], round(100 * r["accuracy"], 2)) for r in exported["formats"]
    ]
    assert card["results"][1]["interval_95"] == [
        round(100 * exported["formats"][1]["diff_lo"], 2),
        round(100 * exported["formats"][1]["diff_hi"], 2),
    ]
    modelfile = (folder / "Modelfile").read_text().splitlines()
    [source] = [line for line in modelfile if line.startswith("FROM ")]
    assert (folder / source.split("./")[1]).is_file()
    assert 'TEMPLATE """predict: {{ .Prompt }}' in modelfile and "PARAMETER temperature 0" in modelfile


def test_a_llama_cpp_server_on_the_export_answers_the_label_only_prompt(trained_run, exported):
    """The server reads the prompt as text with the file's own tokenizer: the card's request."""
    rows = [r for _, r in iter_jsonl(trained_run / "predictions" / "test.jsonl")][:4]
    port = free_port()
    server = start_llama(port, model=str(trained_run / "export" / "tiny-f16.gguf"))
    try:
        answers = [
            httpx.post(
                f"http://127.0.0.1:{port}/v1/completions",
                json={
                    "prompt": f"predict: {r['input']}\n",
                    "max_tokens": 12,
                    "temperature": 0,
                    "repeat_penalty": 1.0,
                },
                timeout=60,
            ).json()["choices"][0]["text"]
            for r in rows
        ]
    finally:
        server.kill()
        server.wait()
    assert [a.strip() for a in answers] == [r["pred"] for r in rows]
    assert exported["example"]["prompt"] == f"predict: {rows[0]['input']}\n"


def test_predict_takes_the_gguf_file_instead_of_the_run(trained_run, exported, tmp_path, capsys):
    records = [
        {"id": r["id"], "question": r["input"], "answer": r["gold"]}
        for _, r in iter_jsonl(trained_run / "predictions" / "test.jsonl")
    ][:6]
    write_jsonl(tmp_path / "new.jsonl", records)
    gguf = trained_run / "export" / "tiny-q8_0.gguf"
    q8 = _preds(trained_run / "export" / "predictions" / "q8_0-test.jsonl")
    out = tmp_path / "labels.jsonl"
    assert main(["predict", str(gguf), "--input", str(tmp_path / "new.jsonl"), "--out", str(out)]) == 0
    right = sum(
        r["answer"] == q8[r["id"]] for r in records
    )  # arith scores equations by value; these are exact
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line == f"predict: 6 inputs, 6 labelled, accuracy {100 * right / 6:.2f}% on 6 with gold -> {out}"
    assert {r["id"]: r["pred"] for _, r in iter_jsonl(out)} == {r["id"]: q8[r["id"]] for r in records}


def test_ranked_labels_through_llama_cpp_match_the_pytorch_ranking(trained_run, exported):
    from stepdistill.config import load_config
    from stepdistill.export.llama_student import LlamaStudent
    from stepdistill.ranking import rank_labels
    from stepdistill.tasks import get_task
    from stepdistill.training.formatting import eval_source
    from stepdistill.training.models import load_saved_student

    cfg = load_config(trained_run / "config.yaml")
    task = get_task(cfg.task)
    rows = [r for _, r in iter_jsonl(trained_run / "predictions" / "test.jsonl")][:8]
    sources = [f"{cfg.train.label_prefix}{r['input']}" for r in rows]
    candidates = [[r["gold"], "17 + 13", "3 * 4", r["pred"] or "1"] for r in rows]
    assert sources[0] == eval_source(task, _annotation(rows[0]), cfg.train)
    torch_best, torch_scores = rank_labels(
        load_saved_student(trained_run / "best", "causal"), task, sources, candidates, cfg.train, cfg.eval
    )
    student = LlamaStudent(trained_run / "export" / "tiny-f16.gguf", threads=1, n_ctx=128, ranking=True)
    try:
        best, scores = student.rank(task, sources, candidates, cfg.train, cfg.eval)
    finally:
        student.close()
    assert best == torch_best
    for mine, theirs in zip(scores, torch_scores):
        assert mine == pytest.approx(theirs, abs=0.05)  # float16 weights: log-probs within 0.05 nats


def _annotation(row: dict):
    from stepdistill.schema import Annotation

    return Annotation(id=row["id"], fields={"question": row["input"]}, gold=row["gold"])


def test_the_report_shows_the_deploy_table_without_torch_or_llama_cpp(trained_run, exported, tmp_path):
    code = (
        "import sys; from stepdistill.report.build import build_report; "
        f"build_report([{str(trained_run)!r}], out={str(tmp_path)!r}); "
        "assert 'torch' not in sys.modules and 'llama_cpp' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
    section = (tmp_path / "report.md").read_text().split("## Deploy\n")[1].split("\n## ")[0]
    q8 = _format(exported, "q8_0")
    # the tiny student's q8_0 file may change a prediction or two; its interval still holds 0
    assert q8["diff_lo"] <= 0 <= q8["diff_hi"]
    interval = f"{100 * q8['diff']:+.1f} [{100 * q8['diff_lo']:+.1f}, {100 * q8['diff_hi']:+.1f}]"
    points = interval.replace(" [", " points [", 1)
    assert f"q8_0 keeps accuracy within its interval ({points}, {q8['changed']} of {N}" in section
    assert (
        f"| q8_0 GGUF (llama.cpp, {q8['threads']} thread{'s' * (q8['threads'] != 1)}) "
        f"| {q8['size_bytes'] / 1e6:,.1f} | {100 * q8['accuracy']:.2f} | {interval} | "
    ) in section
    assert f"| {q8['changed']} / {N} |" in section


# --- refusals: one line, exit 2, nothing half-written -------------------------------------------


def test_an_existing_export_is_kept_without_overwrite(trained_run, exported, tmp_path, capsys):
    before = (trained_run / "export" / "tiny-f16.gguf").stat().st_mtime_ns
    assert main(["export", str(trained_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"error: {trained_run / 'export' / 'tiny-f16.gguf'} exists: pass --overwrite to replace this export"
    )
    assert (trained_run / "export" / "tiny-f16.gguf").stat().st_mtime_ns == before
    out = tmp_path / "again"
    assert main(["export", str(trained_run), "--quant", "q8_0", "--out", str(out)]) == 0
    assert main(["export", str(trained_run), "--quant", "q8_0", "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.glob("*.gguf")) == ["tiny-q8_0.gguf"]  # no f16 or temporary left
    assert [r["format"] for r in json.loads((out / "deploy.json").read_text())["formats"]] == ["q8_0"]


def test_a_missing_run_and_an_unknown_format_are_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope'}: no such run folder"
    (tmp_path / "run").mkdir()
    assert main(["export", str(tmp_path / "run"), "--quant", "q3"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --quant: unknown format q3; choose from f16, q8_0, q4_0, q5_k_m, q4_k_m, q6_k"
    )


def test_without_llama_cpp_export_says_how_to_get_it(trained_run, tmp_path, monkeypatch, capsys):
    from stepdistill.export.quantize import LLAMA_MISSING

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` now fails as if not installed
    assert main(["export", str(trained_run), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {LLAMA_MISSING}"
    assert not (tmp_path / "out").exists()


def test_a_t5_student_is_refused_naming_the_supported_architectures(tmp_path, tiny_seq2seq_dir, capsys):
    cfg = write_run_config(tmp_path, tiny_seq2seq_dir, max_steps=1, eval_every=1)
    assert main(["train", str(cfg)]) == 0
    capsys.readouterr()
    run = tmp_path / "runs" / "tiny"
    assert main(["export", str(run)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {run / 'best'}: cannot export a T5ForConditionalGeneration student to GGUF; export "
        "supports Llama-architecture decoders (LlamaForCausalLM: SmolLM2, Llama) (the run's best/ folder "
        "loads with transformers as it is)"
    )
    assert not (run / "export").exists()


def _mount_tmpfs(folder: Path, size: str) -> bool:
    """Mount a tmpfs of `size` on `folder` (root in a container can); False when refused."""
    folder.mkdir()
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
        ).returncode
        == 0
    )


@pytest.mark.parametrize(
    ("size", "failing"),
    [("6m", "tiny-f16.gguf"), ("10m", "tiny-q8_0.gguf")],
    ids=["our-f16-writer", "llama-cpp-quantizer"],
)
def test_a_full_disk_leaves_no_half_written_file(
    trained_run, exported, size, failing, tmp_path, capsys, monkeypatch
):
    """6 MiB: no room for the 8 MB float16 file; 10 MiB: room for it, not for the q8_0 file next to it."""
    out = tmp_path / "disk"
    mounted = _mount_tmpfs(out, size)
    try:
        if not mounted:  # no tmpfs here: the writer meets ENOSPC as it would on a full disk
            if failing != "tiny-f16.gguf":
                pytest.skip("cannot mount a tmpfs to fill: llama.cpp's own write is not injectable")
            import gguf

            def full(*args, **kwargs):
                raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", full)
        assert main(["export", str(trained_run), "--quant", "f16,q8_0", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            f"error: disk full writing {out / failing} (No space left on device); earlier files are "
            "intact: free space and re-run"
        ]
        assert list(out.iterdir()) == []  # neither file, nor a temporary name, nor a log
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(out)], capture_output=True)


def test_a_sweep_folder_exports_its_training_with_the_best_validation_accuracy(tmp_path):
    from stepdistill.export.deploy import find_training

    for name, valid in (("distill-f1-s0", 0.4), ("standard-f1-s0", 0.8), ("step_by_step-f1-s0", 0.8)):
        (tmp_path / name / "best").mkdir(parents=True)
        (tmp_path / name / "metrics.json").write_text(json.dumps({"splits": {"valid": {"accuracy": valid}}}))
    (tmp_path / "annotations").mkdir()
    assert find_training(tmp_path) == tmp_path / "standard-f1-s0"  # the first of the two best, by name
    assert find_training(tmp_path / "distill-f1-s0") == tmp_path / "distill-f1-s0"

"""The export folder's model card (README.md with Hugging Face metadata) and Ollama Modelfile.

Both are written from deploy.json's measurements and the run's config: what the student is, how it
was made (task, teacher, method, data), what each file scored against the PyTorch student, and how
to prompt it exactly as it was trained, through llama.cpp's server, Ollama or `stepdistill predict`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from stepdistill.config import Config
from stepdistill.data.io import atomic_write_text
from stepdistill.embedded import EMBEDDED_SMOLLM2
from stepdistill.schema import Annotation
from stepdistill.training.batching import CAUSAL_SEP
from stepdistill.training.formatting import eval_source

HUB_IDS = {EMBEDDED_SMOLLM2: "HuggingFaceTB/SmolLM2-135M-Instruct"}  # the embedded GGUF's origin
PROMPT = "{{ .Prompt }}"  # where Ollama puts the user's text


class _Placeholder:
    """A task whose every input is Ollama's prompt placeholder: eval_source then gives the template."""

    @staticmethod
    def format_input(fields: dict[str, Any]) -> str:
        return PROMPT


def prompt_template(cfg: Config) -> str:
    """The student's label-only prompt around `{{ .Prompt }}`, built by the code that prompts it."""
    blank = Annotation(id="", fields={})
    return eval_source(_Placeholder(), blank, cfg.train) + CAUSAL_SEP  # type: ignore[arg-type]


def recommended(deploy: dict[str, Any]) -> dict[str, Any]:
    """The smallest file that is indistinguishable from the PyTorch student: its interval includes
    0 and it changes at most 1% of the predictions (else the first file, normally f16)."""
    fine = [
        r for r in deploy["formats"] if r["diff_lo"] <= 0 <= r["diff_hi"] and r["changed"] <= 0.01 * r["n"]
    ]
    return min(fine, key=lambda r: r["size_bytes"]) if fine else deploy["formats"][0]


def base_model(model: str) -> str | None:
    """A Hugging Face id for the student's starting model, when it has one (not a local folder)."""
    if model in HUB_IDS:
        return HUB_IDS[model]
    return model if model.count("/") == 1 and not Path(model).exists() else None


def metadata(deploy: dict[str, Any], cfg: Config, metrics: dict[str, Any]) -> dict[str, Any]:
    """The card's YAML header: Hugging Face keys, then stepdistill's own record of how it was made."""
    teacher = f"{cfg.teacher.backend}:{cfg.teacher.model}" if cfg.teacher else None
    results = [
        {
            "format": r["format"],
            "file": r["file"],
            "size_bytes": r["size_bytes"],
            "accuracy": round(100 * r["accuracy"], 2),
            "delta_vs_pytorch_points": round(100 * r["diff"], 2),
            "interval_95": [round(100 * r["diff_lo"], 2), round(100 * r["diff_hi"], 2)],
            "mcnemar_p": round(r["mcnemar_p"], 4),
            "changed_predictions": r["changed"],
        }
        for r in deploy["formats"]
    ]
    meta: dict[str, Any] = {}
    if base_model(cfg.student.model):
        meta["base_model"] = base_model(cfg.student.model)
    meta |= {
        "library_name": "gguf",
        "pipeline_tag": "text-generation",
        "tags": ["stepdistill", "distillation", cfg.train.method, deploy["task"], "gguf", "llama.cpp"],
        "model-index": [
            {
                "name": deploy["name"],
                "results": [
                    {
                        "task": {"type": "text-generation", "name": deploy["task"]},
                        "dataset": {"name": deploy["task"], "type": deploy["task"], "split": deploy["split"]},
                        "metrics": [
                            {"type": "accuracy", "name": f"{r['format']} GGUF", "value": r["accuracy"]}
                            for r in results
                        ],
                    }
                ],
            }
        ],
        "stepdistill": {
            "task": deploy["task"],
            "teacher": teacher,
            "method": cfg.train.method,
            "label_source": metrics.get("label_source"),
            "student": cfg.student.model,
            "data": {
                "train_examples": (metrics.get("train") or {}).get("label_examples"),
                "rationale_examples": (metrics.get("train") or {}).get("rationale_examples"),
                f"{deploy['split']}_examples": deploy["pytorch"]["n"],
            },
            "pytorch_accuracy": round(100 * deploy["pytorch"]["accuracy"], 2),
            "label_decoding": deploy["label_decoding"],
            "results": results,
        },
    }
    return meta


def _table(deploy: dict[str, Any]) -> list[str]:
    py = deploy["pytorch"]
    lines = [
        "| file | size MB | accuracy % | Δ vs PyTorch, points [95% interval] | McNemar p | changed | ms / example |",
        "|---|---|---|---|---|---|---|",
        f"| PyTorch (best/, float32) | {py['size_bytes'] / 1e6:.1f} | {100 * py['accuracy']:.2f} | – | – | – | "
        + (f"{py['ms_per_example']:.1f} (batched) |" if py.get("ms_per_example") else "– |"),
    ]
    for r in deploy["formats"]:
        lines.append(
            f"| {r['file']} | {r['size_bytes'] / 1e6:.1f} | {100 * r['accuracy']:.2f} | {100 * r['diff']:+.1f} "
            f"[{100 * r['diff_lo']:+.1f}, {100 * r['diff_hi']:+.1f}] | {r['mcnemar_p']:.3g} | {r['changed']} "
            f"| {r['ms_per_example']:.1f} |"
        )
    return lines


def serving(deploy: dict[str, Any], cfg: Config, file: str) -> tuple[str, str]:
    """(the shell commands that serve `file` with llama.cpp and ask it, the Ollama Modelfile)."""
    template = prompt_template(cfg)
    example = deploy["example"]["prompt"]
    budget = cfg.eval.max_new_tokens + (
        cfg.train.max_target_length if cfg.train.method == "single_task" else 0
    )
    stop = ', "stop": ["\\n"]' if cfg.train.method == "answer_first" else ""
    request = json.dumps({"prompt": example, "max_tokens": budget, "temperature": 0, "repeat_penalty": 1.0})
    request = request[:-1] + stop + "}"
    shell = "\n".join(
        [
            f"python -m llama_cpp.server --model {file} --n_ctx 2048 --port 8000   # or: llama-server -m {file} --port 8000",
            "curl -s http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \\",
            f"  -d '{request}'",
        ]
    )
    ollama_stop = 'PARAMETER stop "\\n"\n' if cfg.train.method == "answer_first" else ""
    modelfile = (
        f"# ollama create {deploy['name'].replace('/', '-')} -f Modelfile\n"
        f'# ollama run {deploy["name"].replace("/", "-")} "<the input, as the task formats it>"\n'
        f"FROM ./{file}\n"
        f'TEMPLATE """{template}"""\n'
        "PARAMETER temperature 0\n"
        "PARAMETER repeat_penalty 1\n"
        f"PARAMETER num_predict {budget}\n" + ollama_stop
    )
    return shell, modelfile


def write_card(out_dir: Path, deploy: dict[str, Any], cfg: Config, metrics: dict[str, Any]) -> None:
    """README.md (model card) and Modelfile in `out_dir`."""
    best = recommended(deploy)
    shell, modelfile = serving(deploy, cfg, best["file"])
    example = deploy["example"]
    header = yaml.safe_dump(metadata(deploy, cfg, metrics), sort_keys=False, allow_unicode=True)
    body = [
        f"# {deploy['name']}: a student for {deploy['task']}, distilled with stepdistill",
        "",
        f"A {cfg.train.method} student of {cfg.student.model} for the task {deploy['task']}, trained by "
        "stepdistill and exported to GGUF for llama.cpp and Ollama. Each file was "
        f"scored on the run's {deploy['pytorch']['n']} {deploy['split']} examples with the student's own "
        "prompt and greedy decoding, against the PyTorch student on the same examples (paired bootstrap "
        "interval, exact McNemar test; ms / example: llama.cpp, one example at a time, "
        f"{deploy['formats'][0]['threads']} thread{'s' * (deploy['formats'][0]['threads'] != 1)}).",
        "",
        *_table(deploy),
        "",
        f"Recommended: `{best['file']}`, the smallest file whose interval includes 0 and that changes at most "
        "1% of the PyTorch student's predictions.",
        "",
        "## Prompt",
        "",
        "The student reads one prompt and writes the label; no chat template, no system prompt:",
        "",
        "```",
        prompt_template(cfg).replace("{{ .Prompt }}", "<input>"),
        "```",
        "",
        f"For example `{json.dumps(example['prompt'])}` -> `{example['pytorch_pred']}` (gold: `{example['gold']}`).",
        "",
        "## Serve",
        "",
        "```bash",
        shell,
        "```",
        "",
        'Ollama: `ollama create <name> -f Modelfile` (the Modelfile beside this card), then `ollama run <name> "<input>"`.',
        "",
        f"stepdistill: `stepdistill predict {best['file']} --input new.jsonl` labels a file of task records.",
        "",
    ]
    atomic_write_text(out_dir / "README.md", f"---\n{header}---\n\n" + "\n".join(body))
    atomic_write_text(out_dir / "Modelfile", modelfile)

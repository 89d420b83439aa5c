"""Few-shot chain-of-thought prompts, in plain-completion form and in chat form.

An exemplar file (stepdistill/teachers/exemplars/<task>.json, or the user's own) is a JSON object:

    {"system": "instruction for chat models",          # optional
     "stop": ["\\nQ:"],                                # optional; default ["\\nQ:"]
     "template": "{exemplars}Q: {input}\\nA:",         # optional plain-completion template
     "exemplars": [{"fields": {...}, "rationale": "...", "answer": "(b) bank."}, ...]}

Each exemplar gives the task's input either as `fields` (shown with task.format_input, exactly as
the student will see it) or as ready `input` text, and its answer either as `rationale` + `answer`
(joined as "<rationale> <task.answer_phrase> <answer>", so every exemplar ends in the phrase the
task's parser reads) or as a whole `completion`.

Plain form: the exemplars as "Q: <input>\\nA: <completion>" blocks, then "Q: <input>\\nA:" for the
example. Chat form: a system instruction, one user/assistant turn per exemplar, then the example.
A user `prompt_template` may use {exemplars}, {input}, {answer_phrase} and the example's own fields.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stepdistill.errors import ConfigError, DataError
from stepdistill.tasks.base import Task
from stepdistill.teachers.base import Prompt
from stepdistill.teachers.config import TeacherConfig

EXEMPLAR_DIR = Path(__file__).with_name("exemplars")
DEFAULT_TEMPLATE = "{exemplars}Q: {input}\nA:"
# Teachers run on into an invented next exemplar; stopping at its "Q:" saves paid tokens.
DEFAULT_STOP = ("\nQ:",)


@dataclass(frozen=True)
class PromptSpec:
    """Everything needed to turn an example into a prompt."""

    system: str
    shots: tuple[tuple[str, str], ...]  # (input text, completion)
    template: str
    stop: tuple[str, ...]
    custom_template: bool = False  # a user template: chat form sends it as one user message


def exemplar_path(task_name: str) -> Path | None:
    """The shipped exemplar file of a task ("anli1" uses anli's), or None (generic tasks)."""
    name = "anli" if task_name.startswith("anli") else task_name
    path = EXEMPLAR_DIR / f"{name}.json"
    return path if path.exists() else None


def _default_system(task: Task) -> str:
    labels = f" The answer is one of: {', '.join(task.labels)}." if task.labels else ""
    return (
        "Answer the question. First explain your reasoning step by step in a few sentences, then "
        f'finish with "{task.answer_phrase.strip()} <answer>".{labels}'
    )


def _completion(task: Task, ex: dict[str, Any], path: str, i: int) -> str:
    if isinstance(ex.get("completion"), str):
        return ex["completion"].strip()
    for key in ("rationale", "answer"):
        if not isinstance(ex.get(key), str):
            raise DataError(path, None, f"exemplars[{i}].{key}", "missing or not a string")
    return f"{ex['rationale'].strip()} {task.answer_phrase.strip()} {ex['answer'].strip()}"


def _shot(task: Task, ex: Any, path: str, i: int) -> tuple[str, str]:
    if not isinstance(ex, dict):
        raise DataError(path, None, f"exemplars[{i}]", "expected an object")
    if isinstance(ex.get("input"), str):
        text = ex["input"]
    elif isinstance(ex.get("fields"), dict):
        try:
            text = task.format_input(ex["fields"])
        except (KeyError, ValueError, TypeError, IndexError) as err:
            raise DataError(path, None, f"exemplars[{i}].fields", f"not valid for this task: {err}") from None
    else:
        raise DataError(path, None, f"exemplars[{i}]", "needs 'fields' (an object) or 'input' (text)")
    return text, _completion(task, ex, path, i)


def read_exemplar_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"teacher.exemplars: file {path} does not exist")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(str(path), err.lineno, None, f"not valid JSON: {err.msg}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("exemplars"), list):
        raise DataError(str(path), None, "exemplars", "expected an object with an 'exemplars' list")
    return obj


def load_prompt_spec(task: Task, cfg: TeacherConfig) -> PromptSpec:
    """Exemplars and template for a task: the config's file/template first, else the shipped ones.
    A task without shipped exemplars (generic) is prompted zero-shot with an instruction."""
    path = Path(cfg.exemplars) if cfg.exemplars else exemplar_path(task.name)
    obj = read_exemplar_file(path) if path else {"exemplars": []}
    shots = tuple(_shot(task, ex, str(path), i) for i, ex in enumerate(obj["exemplars"]))
    template = cfg.prompt_template or obj.get("template") or DEFAULT_TEMPLATE
    stop = cfg.stop if cfg.stop is not None else obj.get("stop", DEFAULT_STOP)
    return PromptSpec(
        system=cfg.system_prompt or obj.get("system") or _default_system(task),
        shots=shots,
        template=template,
        stop=tuple(stop),
        custom_template=bool(cfg.prompt_template),
    )


def _render(template: str, values: dict[str, Any]) -> str:
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    missing = sorted(names - set(values))
    if missing:
        raise ConfigError(
            f"teacher.prompt_template: unknown placeholder(s) {', '.join('{' + m + '}' for m in missing)}; "
            f"available: {', '.join('{' + k + '}' for k in sorted(values))}"
        )
    return template.format_map(values)


def build_prompt(spec: PromptSpec, task: Task, fields: dict[str, Any]) -> Prompt:
    """The prompt for one example, in both forms."""
    query = task.format_input(fields)
    block = "".join(f"Q: {q}\nA: {a}\n\n" for q, a in spec.shots)
    values = {**{k: v for k, v in fields.items() if isinstance(k, str)}, "exemplars": block, "input": query}
    values["answer_phrase"] = task.answer_phrase.strip()
    text = _render(spec.template, values)
    messages: list[dict[str, str]] = [{"role": "system", "content": spec.system}]
    if spec.custom_template:
        messages.append({"role": "user", "content": text})
    else:
        for q, a in spec.shots:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": query})
    return Prompt(text=text, messages=tuple(messages))

"""What README.md and docs/*.md show can be used as written.

- Every `stepdistill ...` command line (in shell blocks, and inline ones such as
  `stepdistill train CONFIG --resume`) goes through the real command-line entry point,
  `stepdistill.cli.main`, with each subcommand's handler replaced by a recorder: the subcommand
  exists, its options are accepted, and every `--section.key value` override names a config key.
  A command on a shipped config (`configs/...`) loads that config with its overrides.
- Every `configs/...yaml` path the pages mention exists.
- Every YAML block loads with its loader: a whole config with `config_from_dict`, one or a few
  sections laid over `configs/demo.yaml`, a benchmark grid with `bench/quality.py`'s `load_spec`.

The README's "Your own task" journey is also run against a real server: tests/test_journey_llama.py.
"""

from __future__ import annotations

import copy
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from stepdistill import cli
from stepdistill.config import Config, apply_overrides, config_from_dict, load_config
from stepdistill.errors import ConfigError
from stepdistill.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
PROGRAMS = ("stepdistill", ".venv/bin/stepdistill")
CONFIG_PATH = re.compile(r"(?<![\w/.-])((?:bench/)?configs/[\w./-]+\.ya?ml)")
INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


def code_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, body, line of the opening fence) of every fenced block."""
    blocks, lang, body, start = [], None, [], 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, body, start = line[3:].strip(), [], number
            else:
                blocks.append((lang, "\n".join(body) + "\n", start))
                lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, f"a code block opened at line {start} is never closed"
    return blocks


def stepdistill_argv(line: str) -> list[str] | None:
    """The arguments after `stepdistill` (or `-m stepdistill.cli`) in one shell line, else None."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return None
    for i, token in enumerate(tokens):
        if token in PROGRAMS and i == 0:
            return tokens[1:]
        if token == "stepdistill.cli" and i > 0 and tokens[i - 1] == "-m":
            return tokens[i + 1 :]
    return None


def shown_commands(text: str, name: str) -> list[tuple[str, list[str], str]]:
    """('page:line', argv, the whole line) for every stepdistill command shown on a page."""
    found = []
    fenced_lines: set[int] = set()
    for lang, body, start in code_blocks(text):
        lines = body.splitlines()
        fenced_lines.update(range(start, start + len(lines) + 2))
        if lang not in SHELL_BLOCKS:
            continue
        joined, first = "", None
        for offset, line in enumerate(lines, start + 1):
            first = first or offset
            if line.endswith("\\"):
                joined += line[:-1] + " "
                continue
            joined += line
            argv = stepdistill_argv(joined)
            if argv is not None:
                found.append((f"{name}:{first}", argv, joined))
            joined, first = "", None
    for number, line in enumerate(text.splitlines(), 1):
        if number in fenced_lines:
            continue
        for span in INLINE_CODE.findall(line):
            argv = stepdistill_argv(span) if span.split(" ", 1)[0] in PROGRAMS else None
            # A name in prose (`stepdistill annotate`) or a synopsis (`report RUN_DIR [RUN_DIR ...]`)
            # is not a command line.
            if argv is None or len(argv) < 2 or "[--" in span or "..." in span:
                continue
            found.append((f"{name}:{number}", argv, span))
    return found


COMMANDS = [
    c for page in PAGES for c in shown_commands(page.read_text(encoding="utf-8"), str(page.relative_to(ROOT)))
]


def parse_like_main(argv: list[str], monkeypatch) -> Any:
    """Run `stepdistill.cli.main(argv)` with every subcommand's handler replaced by a recorder;
    return the parsed arguments (with `.overrides`), or fail with what the parser said."""
    seen: list[Any] = []
    real_build = cli.build_parser

    def recording_parser():
        parser = real_build()
        for action in parser._subparsers._group_actions:
            for sub in action.choices.values():
                sub.set_defaults(func=seen.append)
        return parser

    monkeypatch.setattr(cli, "build_parser", recording_parser)
    monkeypatch.setattr(cli, "sleep_idle_cpu_threads", lambda: False)  # leave this process's env alone
    try:
        code = cli.main(argv)
    except SystemExit as stop:
        pytest.fail(f"the command line parser refuses {argv}: exit {stop.code}")
    assert code == 0 and len(seen) == 1
    return seen[0]


def unknown_keys(overrides: list[str]) -> list[str]:
    """The `--section.key` overrides that name no config key (values are not judged here: the
    config they apply to is the reader's own)."""
    raw = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    try:
        config_from_dict(apply_overrides(raw, list(overrides)), "overrides")
    except ConfigError as err:
        return [line.strip() for line in str(err).splitlines() if "unknown key" in line]
    return []


def test_the_pages_show_commands():
    subcommands = {argv[0] for _, argv, _ in COMMANDS}
    assert {"import-official", "annotate", "train", "evaluate", "predict", "run", "report", "kd-targets"} <= (
        subcommands
    )
    # The README's journey, the tour and the multi-process launches are all among them.
    assert any("-m stepdistill.cli" in line for _, _, line in COMMANDS)


@pytest.mark.parametrize("where,argv,line", COMMANDS, ids=[f"{w} {' '.join(a[:2])}" for w, a, _ in COMMANDS])
def test_every_command_shown_parses(where, argv, line, monkeypatch):
    args = parse_like_main(argv, monkeypatch)
    assert args.command == argv[0]
    for path in CONFIG_PATH.findall(line):
        assert (ROOT / path).is_file(), f"{where}: {path} does not exist"
    overrides = getattr(args, "overrides", [])
    config = getattr(args, "config", None)
    if config and config.startswith("configs/"):
        # A shipped config: it loads with the overrides shown, values and all.
        load_config(ROOT / config, overrides)
    else:
        assert unknown_keys(overrides) == [], f"{where}: {line}"


def test_a_wrong_command_is_caught(monkeypatch):
    """The checks above fail on a subcommand, an option or an override that does not exist."""
    for argv in (["trian", "configs/demo.yaml"], ["predict", "runs/x"], ["report", "runs/x", "--plan"]):
        with pytest.raises(pytest.fail.Exception, match="refuses"):
            parse_like_main(argv, monkeypatch)
    assert unknown_keys(["--train.max_step", "5"]) == [
        "train.max_step: unknown key (did you mean `max_steps`?)"
    ]
    assert unknown_keys(["--train.max_steps", "5", "--name", "x"]) == []
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(ROOT / "configs" / "demo.yaml", ["--train.lr", "-1"])
    page = (
        "Run `stepdistill train CONFIG --resume`, not `stepdistill report RUN_DIR [RUN_DIR ...]`:\n"
        "```bash\nstepdistill run \\\n  c.yaml --plan   # a comment\nmake demo  # = stepdistill run x.yaml\n```\n"
    )
    assert [(where, argv) for where, argv, _ in shown_commands(page, "p.md")] == [
        ("p.md:3", ["run", "c.yaml", "--plan"]),
        ("p.md:1", ["train", "CONFIG", "--resume"]),
    ]


def test_every_config_path_mentioned_exists():
    missing = [
        f"{page.relative_to(ROOT)}: {path}"
        for page in PAGES
        for path in CONFIG_PATH.findall(page.read_text(encoding="utf-8"))
        if not (ROOT / path).is_file()
    ]
    assert missing == []


# ---------------------------------------------------------------- YAML blocks


def yaml_blocks() -> list[tuple[str, dict, str]]:
    """('page:line', loaded block, the page's text) for every ```yaml block; a block that opens with
    `# <file>.yaml` is the file of that name, which a config on the same page may name."""
    out = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for lang, body, start in code_blocks(text):
            if lang in ("yaml", "yml"):
                loaded = yaml.safe_load(body)
                assert isinstance(loaded, dict), f"{page.name}:{start}: not a YAML mapping"
                out.append((f"{page.relative_to(ROOT)}:{start}", loaded, text))
    return out


BLOCKS = yaml_blocks()


def named_blocks(text: str) -> dict[str, str]:
    """YAML blocks on a page that open with `# <file>.yaml`: the files a config on that page names."""
    named = {}
    for lang, body, _ in code_blocks(text):
        m = re.match(r"#\s*([\w.-]+\.ya?ml)\s*\n", body)
        if lang in ("yaml", "yml") and m:
            named[m.group(1)] = body
    return named


def spec_name(block: dict, text: str) -> str | None:
    """The file name of a task spec block (one that holds a generic task's keys), else None."""
    if "input_template" not in block:
        return None
    return next((name for name, body in named_blocks(text).items() if yaml.safe_load(body) == block), None)


def merged(base: dict, over: dict) -> dict:
    """`over` laid over `base` key by key; a task with another name replaces the task."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if (
            key == "task"
            and isinstance(value, dict)
            and value.get("name") != base.get("task", {}).get("name")
        ):
            out[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def test_the_pages_show_yaml():
    assert len(BLOCKS) >= 8
    assert any({"task", "data"} <= set(block) for _, block, _ in BLOCKS)  # at least one whole config


@pytest.mark.parametrize("where,block,text", BLOCKS, ids=[w for w, _, _ in BLOCKS])
def test_every_yaml_block_loads(where, block, text, tmp_path, monkeypatch):
    sections = set(Config.model_fields)
    monkeypatch.chdir(tmp_path)
    for name, body in named_blocks(text).items():
        Path(name).write_text(body, encoding="utf-8")
    if set(block) <= sections and {"task", "data"} <= set(block):
        config_from_dict(block, where)  # a whole config, as written
    elif set(block) <= sections:
        demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
        config_from_dict(merged(demo, block), where)  # sections of a config
    elif (name := spec_name(block, text)) is not None:
        # A generic task's spec file: it loads as the task of a config.
        demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
        cfg = config_from_dict(merged(demo, {"task": {"name": "generic", "spec": name}}), where)
        assert get_task(cfg.task).name == "generic"
    else:
        sys.path.insert(0, str(ROOT / "bench"))
        from quality import load_spec

        Path("grid.yaml").write_text(yaml.safe_dump(block), encoding="utf-8")
        assert load_spec("grid.yaml")["methods"], f"{where}: neither a config nor a benchmark grid"

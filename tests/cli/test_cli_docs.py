"""docs/cli.md documents the command as built: every command, every option, the exit codes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main

from stageflow.cli import _errors, app

DOC = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text(encoding="utf-8")
COMMAND = typer.main.get_command(app)
COMMANDS = COMMAND.commands  # type: ignore[attr-defined]  # a group of commands


def _section(name: str) -> str:
    """The text of the doc's section about ``stageflow <name>``."""
    match = re.search(rf"^## `stageflow {name}`\n(.*?)(?=^## |\Z)", DOC, re.M | re.S)
    assert match is not None, f"docs/cli.md has no section '## `stageflow {name}`'"
    return match.group(1)


def test_the_app_has_the_agreed_commands():
    assert set(COMMANDS) == {
        "run", "resume", "send", "runs", "show", "graph", "validate", "events",
        "serve", "token", "mcp", "info", "schema", "export", "pipelines", "submit", "worker",
        "workers",
    }  # fmt: skip


def test_every_documented_command_exists():
    documented = set(re.findall(r"^## `stageflow (\w+)`", DOC, re.M))

    assert documented == set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_of_a_command_is_in_its_section(name):
    section = _section(name)
    synopsis = section.split("```console\n", 1)[1].split("```", 1)[0]
    options = [p for p in COMMANDS[name].params if p.param_type_name == "option"]

    for option in options:
        for flag in option.opts + option.secondary_opts:
            if flag in ("--help", "-h"):
                continue
            assert f"`{flag}" in section, f"{flag} of {name} is not in its table"
            if flag.startswith("--"):
                assert flag in synopsis, f"{flag} of {name} is not in its synopsis"
    arguments = [p.metavar for p in COMMANDS[name].params if p.param_type_name == "argument"]
    if arguments:  # in their order: stageflow send RUN_ID NAME JSON
        assert f"stageflow {name} {' '.join(arguments)}" in synopsis


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_documented_option_exists(name):
    section = _section(name)
    flags = {
        f
        for p in COMMANDS[name].params
        for f in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]
    }

    for flag in set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", section)):
        assert flag in flags or flag == "--help", f"{name} has no option {flag}"


def test_the_exit_codes_are_the_codes_of_the_command():
    table = DOC.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (\w+):", table, re.M)

    assert {word: int(code) for code, word in rows} == _errors.EXIT_CODES
    assert _errors.EXIT_CODES == {
        "completed": _errors.EXIT_COMPLETED,
        "failed": _errors.EXIT_FAILED,
        "usage": _errors.EXIT_USAGE,
        "waiting": _errors.EXIT_WAITING,
        "cancelled": _errors.EXIT_CANCELLED,
    }


def test_the_environment_variables_are_documented():
    from stageflow.cli import _store

    for name in (_store.STORE_ENV, "STAGEFLOW_LEASE_TTL"):
        assert name in DOC
    assert _store.DEFAULT_STORE in DOC
    assert "STAGEFLOW_EVENTS_DIR" not in DOC  # the events are in the store now

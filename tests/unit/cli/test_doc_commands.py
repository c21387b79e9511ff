"""Every `tether ...` command the docs and the examples' headers show parses against the
real CLI: a flag renamed or a subcommand dropped fails here, not in a reader's shell.

Commands are taken from lines that start with `tether ` (after `$ ` or indentation) in
README.md, docs/*.md, the examples' module docstrings and YAML headers, and the chart's
NOTES.txt; backslash continuations are joined, and what follows `|`, `&&`, `;`, `&` or
a `#` comment is left out. Each is parsed by `build_parser()` as the shell would split it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tether_operator.cli.main import build_parser

REPO = Path(__file__).resolve().parents[3]
SOURCES = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *sorted((REPO / "examples").glob("*.py")),
    *sorted((REPO / "examples" / "k8s").glob("*.yaml")),
    REPO / "charts" / "tether" / "templates" / "NOTES.txt",
]
LINE = re.compile(r"^[\s#>$]*(tether\s.*)$")
PLACEHOLDERS = {"RUN_ID": "run-1", "ID": "run-1", "NAME": "run-1", "FILE": "flows.py"}


def _logical_lines(text: str) -> list[str]:
    return text.replace("\\\n", " ").splitlines()


def _command(line: str) -> str | None:
    found = LINE.match(line)
    if found is None:
        return None
    command = found.group(1)
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        return command  # an unbalanced quote: a broken command, kept to fail below
    for i, word in enumerate(words):
        if word in ("|", "&&", ";", "&", "||"):
            words = words[:i]
            break
    return shlex.join(words) if words else None


def commands() -> list[tuple[str, str]]:
    found = []
    for path in SOURCES:
        for number, line in enumerate(_logical_lines(path.read_text()), 1):
            command = _command(line)
            if command and not command.startswith("tether operator —"):
                found.append((f"{path.relative_to(REPO)}:{number}", command))
    return found


COMMANDS = commands()


def test_the_docs_show_commands_of_every_kind() -> None:
    verbs = {shlex.split(c)[1] for _, c in COMMANDS if len(shlex.split(c)) > 1}
    assert {"dev", "run", "get", "describe"} <= verbs, verbs
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_a_documented_command_parses(where: str, command: str) -> None:
    argv = [PLACEHOLDERS.get(word, word) for word in shlex.split(command)[1:]]
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `{command}` does not parse (exit {exc.code})")

"""The commands the README and docs/ tell people to run exist: every `make` target, every
`sizeguard` command, action and flag, every script and example they name.

Commands are taken from fenced code blocks (a `$ ` prompt in console blocks, every line in
sh blocks) and from inline code that starts with `sizeguard ` or `make `.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from sizeguard.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
INLINE = re.compile(r"`((?:sizeguard |make |scripts/|\.venv/bin/sizeguard )[^`]*)`")
PLACEHOLDER = re.compile(r"<[^>]*>|\[[^\]]*\]|\{[^}]*\}|\|")


def commands(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, command) for every command a reader of ``path`` is told to run."""
    fence: str | None = None
    previous = ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = FENCE.match(line.strip())
        if match:
            fence = None if fence is not None else (match.group(1) or "text")
            continue
        if fence in ("console", "sh", "bash", "shell"):
            text = line.strip()
            if fence == "console":
                if not text.startswith("$ "):
                    previous = ""
                    continue
                text = text[2:]
            if previous.endswith("\\"):  # a continuation line of the previous command
                previous = text
                continue
            previous = text
            text = text.split(" #", 1)[0].strip()
            if text and not text.startswith("#"):
                yield number, text
        elif fence is None:
            for span in INLINE.findall(line):
                yield number, span


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z0-9_-]*):", text, flags=re.MULTILINE))


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def check_sizeguard(words: list[str]) -> str | None:
    """None if ``sizeguard <words>`` names an existing command, action and flags."""
    parser: argparse.ArgumentParser = build_parser()
    path = ["sizeguard"]
    for word in words:
        choices = subparsers(parser)
        if not choices or word.startswith("-"):
            break
        if word not in choices:
            return f"`{' '.join(path)}` has no command {word!r} (it has {sorted(choices)})"
        parser = choices[word]
        path.append(word)
    known = {option for action in parser._actions for option in action.option_strings}
    for word in words:
        flag = word.split("=", 1)[0]
        if flag.startswith("--") and flag not in known:
            return f"`{' '.join(path)}` has no flag {flag}"
    return None


def check(command: str) -> str | None:
    text = PLACEHOLDER.sub(" ", command)
    for part in re.split(r"&&|;|\|\||\$\(|\)", text):
        try:
            words = shlex.split(part, posix=True)
        except ValueError:
            words = part.split()
        while words and "=" in words[0] and not words[0].startswith("-"):
            words = words[1:]  # VAR=value prefixes
        if not words:
            continue
        head = words[0]
        if head.endswith("/sizeguard") or head == "sizeguard":
            problem = check_sizeguard(words[1:])
        elif head == "make":
            missing = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
            unknown = [w for w in missing if w not in make_targets()]
            problem = f"no make target {unknown}" if unknown else None
        elif head.startswith(("scripts/", "examples/", "tests/bench/")):
            problem = None if (ROOT / head).exists() else f"{head} does not exist"
        elif head.endswith("python") and len(words) > 1 and words[1].endswith(".py"):
            target = ROOT / words[1]
            problem = None if target.exists() else f"{words[1]} does not exist"
        else:
            continue
        if problem:
            return problem
    return None


CASES = [
    pytest.param(path, number, command, id=f"{path.name}:{number}")
    for path in DOCS
    for number, command in commands(path)
]


def test_the_docs_name_commands_at_all() -> None:
    readme = [c for p, _, c in (case.values for case in CASES) if p.name == "README.md"]
    assert "make demo" in readme and "make test" in readme
    assert any(c.startswith("sizeguard serve") for c in readme)
    assert len(CASES) > 100


@pytest.mark.parametrize(("path", "number", "command"), CASES)
def test_a_documented_command_exists(path: Path, number: int, command: str) -> None:
    problem = check(command)
    assert problem is None, f"{path.relative_to(ROOT)}:{number}: {command!r}: {problem}"


@pytest.mark.parametrize(
    "command",
    [
        "sizeguard frobnicate",
        "sizeguard keys explode --dir x",
        "sizeguard serve --transport http --no-such-flag",
        "make no-such-target",
        "scripts/no-such-script",
    ],
)
def test_a_command_that_does_not_exist_is_caught(command: str) -> None:
    assert check(command) is not None

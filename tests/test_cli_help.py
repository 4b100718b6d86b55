"""The command line's own texts: ``--version`` and plain-text ``--help`` for every option."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from importlib.metadata import version

import pytest

from emulator.cli import build_parser, main

#: reStructuredText that must not reach a terminal: ``literals`` and :role:`targets`.
RST = re.compile(r"``|:[a-z]+:`")


def _parsers(parser: argparse.ArgumentParser, name: str
             ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``(command line, parser)`` for the parser and every sub-command below it."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_of_every_sub_command_has_plain_help() -> None:
    walked = dict(_parsers(build_parser(), "rmbg-emulator"))
    # the walk reaches the nested sub-commands the issue names
    assert {"rmbg-emulator serve", "rmbg-emulator models list",
            "rmbg-emulator scenario check", "rmbg-emulator contracts check"} <= set(walked)
    problems = []
    for name, parser in walked.items():
        for text in (parser.description or "", parser.epilog or "", parser.format_help()):
            if RST.search(text):
                problems.append(f"{name}: reStructuredText in {RST.search(text)!r}")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            label = "/".join(action.option_strings) or action.dest
            if not action.help or action.help == argparse.SUPPRESS:
                problems.append(f"{name} {label}: no help")
            elif RST.search(action.help):
                problems.append(f"{name} {label}: reStructuredText in its help")
    assert problems == []


def test_version_prints_the_installed_package_version(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"rmbg-emulator {version('rmbg-emulator')}"
